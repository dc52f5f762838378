"""Every option, declared once: its flag, parser, default, bounds, help and the layers it reaches.

Like uvicorn's ``Config`` and its click options: a setting is one entry, and
everything else derives from it, so adding a knob is one line and no default
can disagree with another. The CLI builds its parsers from ``OPTIONS``;
``with_options(layer)`` gives a dataclass the fields of a layer with their
declared defaults (``shell.render.build.RenderRequest``,
``core.render.options.RenderOptions``, ``core.options.listen_args.ListenerOptions``,
``core.listener.model.Config``); ``copied`` carries them from one to the next;
render's checks read the bounds; ``core.options.listen_args`` writes and parses
the listener's command line from it; ``core.options.remember`` keeps what the
record may hold. Pure and cheap (no argparse): clients and ``sidecar.getState``
inside supervisord parse the listener's line through this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, FrozenSet, Mapping, Optional, Tuple

from sidecar_plugin.core.options.values import (
    Bounds, port_number, port_owner, positive_int, positive_number, shown, switch,
)
from sidecar_plugin.names import (
    DEFAULT_HEALTH_TIMEOUT, DEFAULT_HOST, DEFAULT_PORT, DEFAULT_PROGRAM, DEFAULT_STOP_TIMEOUT, DEFAULT_WORKERS,
    OWNER_SIDECAR,
)

# The layers an option reaches.
RENDER = "render"  # a flag of render and apply: a field of the request (RenderRequest), kept in the record
PLAN = "plan"  # a field of RenderOptions (what the files are rendered from), copied from the request
LISTEN = "listen"  # a flag of ``listen``: written on the listener's command line by render, parsed back by it
WATCH = "watch"  # a field of ListenerOptions that every sidecar of one listener shares
MACHINE = "machine"  # a field of the machine's Config (core.listener.model), copied from ListenerOptions
APPLY = "apply"  # a flag of apply alone

MAX_SECONDS = 3600  # a health timeout or drain window beyond an hour is a typo, not a plan
MIN_BUDGET_MB, MAX_BUDGET_MB = 32, 1 << 20


@dataclass(frozen=True)
class Option:
    """One option, as every layer knows it."""

    flag: str
    parse: Callable[[str], Any]  # text -> value; a ValueError is the one line for the operator
    default: Any
    help: str
    layers: FrozenSet[str]
    kept: str = ""  # how a render's record keeps it (core.options.remember): int, seconds, text or flag
    bounds: Optional[Bounds] = None
    written: str = ""  # on the listener's line: "always", "changed" (not the default), or the option it goes with
    default_text: str = ""  # what render's help says the default is, when it is not the value itself
    listen_help: str = ""  # the listener's help, where render's does not fit it
    listen_parse: Optional[Callable[[str], Any]] = None  # the listener's parser, where it reads more than render

    @property
    def name(self) -> str:
        """The flag without ``--``: how a record, a change line and ``--reset`` name it."""
        return self.flag[2:]

    @property
    def attr(self) -> str:
        return self.name.replace("-", "_")

    @property
    def annotation(self) -> str:
        kind = {float: "float", int: "int", str: "str", bool: "bool"}.get(type(self.default), "Any")
        return f"Optional[{_KIND.get(self.kept, 'Any')}]" if self.default is None else kind

    def help_text(self, layer: str = RENDER) -> str:
        """The help line of ``layer``'s parser, saying the default (render's defaults are not the listener's)."""
        text = (self.listen_help or self.help) if layer == LISTEN else self.help
        if self.default_text and layer != LISTEN:
            return f"{text} (default {self.default_text})"
        return text if self.default in (None, "", False) else f"{text} (default {shown(self.default)})"

    def parser(self, layer: str = RENDER) -> Callable[[str], Any]:
        """The parser of ``layer``: the listener reads what earlier releases wrote on its line."""
        return self.listen_parse or self.parse if layer == LISTEN else self.parse


_KIND = {"int": "int", "seconds": "float", "text": "str", "flag": "bool"}
_SECONDS = Bounds(0, MAX_SECONDS, "seconds", above=True)
_RETRY = Bounds(0, 24 * MAX_SECONDS, "seconds", above=True)
R, RP, RPW, RPWM = ({RENDER}, {RENDER, PLAN}, {RENDER, PLAN, LISTEN, WATCH}, {RENDER, PLAN, LISTEN, WATCH, MACHINE})

OPTIONS: Tuple[Option, ...] = tuple(Option(*o[:4], frozenset(o[4]), **o[5] if len(o) > 5 else {}) for o in (
    # flag, parser, default, help, layers, {kept, bounds, written, default_text}
    ("--port", port_number, None, "the sidecar's port", R | {LISTEN},
     dict(kept="int", bounds=Bounds(1, 65535), default_text=f"the profile's, else {DEFAULT_PORT}; several "
          "profiles: the first to give out")),
    ("--host", str, DEFAULT_HOST, "address LiteLLM binds", RPW, dict(kept="text")),
    ("--program", str, None, "supervisord program name", R | {LISTEN},
     dict(kept="text", default_text=DEFAULT_PROGRAM, listen_help="the program it watches (or --root and --sidecar)")),
    ("--binary", str, "litellm", "LiteLLM executable, resolved now to an absolute path", R, dict(kept="text")),
    ("--supervisord", str, None, "the supervisord that reads the include: render asks its interpreter whether it "
     "loads the plugin that holds the port", R, dict(kept="text", default_text="the one beside sidecar-plugin, "
                                                   "else on PATH")),
    # Two workers: apply replaces them one at a time (sidecar_plugin.names.DEFAULT_WORKERS: why, and the cost).
    ("--workers", int, DEFAULT_WORKERS, "LiteLLM --num_workers: apply replaces workers one at a time, dropping "
     "no request; 1 saves about 600 MB but apply must then restart", RP, dict(kept="int", bounds=Bounds(1, 64))),
    ("--api-key-env", str, "OPENROUTER_API_KEY", "variable holding the OpenRouter key", R, dict(kept="text")),
    ("--master-key-env", str, "AGENTROUTE_MASTER_KEY", "variable holding the master key (unset: generate one "
     "into master.key)", R, dict(kept="text")),
    ("--health-timeout", positive_number, DEFAULT_HEALTH_TIMEOUT, "the outer bound of a start, in seconds; a start "
     "that makes no progress (no CPU, no log line, no worker for the hang window) fails sooner", RPWM,
     dict(kept="seconds", bounds=_SECONDS, written="always")),
    ("--stop-timeout", int, DEFAULT_STOP_TIMEOUT, "the drain window in seconds: in-flight requests may finish on "
     "stop; LiteLLM's GRACEFUL_SHUTDOWN_TIMEOUT, supervisord's stopwaitsecs a bit above", RP,
     dict(kept="int", bounds=Bounds(1, MAX_SECONDS, "seconds"))),
    # Kubernetes' CrashLoopBackOff numbers: 10 s doubling to 5 min, reset after 10 min of healthy running.
    ("--retry-delay", positive_number, 10.0, "seconds before the listener starts again a sidecar that is down for "
     "good (FATAL, or not healthy in time), doubling at each try", RPW,
     dict(kept="seconds", bounds=_RETRY, written="always")),
    ("--retry-max-delay", positive_number, 300.0, "the longest delay between tries", RPW,
     dict(kept="seconds", bounds=_RETRY, written="always")),
    ("--retry-reset-after", positive_number, 600.0, "healthy this many seconds: the try count starts again", RPW,
     dict(kept="seconds", bounds=_RETRY, written="always")),
    # Progress is sampled about once a second: a window under 2 s would call every sidecar hung.
    ("--hang-window", positive_number, 20.0, "seconds without progress before a sidecar counts as hung: running, "
     "no health answer; starting, no CPU used, no log line, no worker born", RPWM,
     dict(kept="seconds", written="changed", bounds=Bounds(2, MAX_SECONDS, "seconds",
                                                          why=": the listener samples progress about once a second"))),
    ("--port-owner", port_owner, OWNER_SIDECAR, "who holds the listening socket: sidecar (LiteLLM binds it) or "
     "supervisord ([fcgi-program]: health is probed on the tree's private socket)", {LISTEN, WATCH},
     dict(written="changed")),
    # The listener reads any positive number of MB, as before this table (a hand-written include may say 512.0).
    ("--memory-budget", int, None, "MB (PSS) per LiteLLM worker: one over it is replaced gracefully", RPW,
     dict(kept="int", written="changed", default_text="off", listen_parse=positive_number, bounds=Bounds(
         MIN_BUDGET_MB, MAX_BUDGET_MB, "MB", why="; a LiteLLM worker is about 130 MB PSS idle"))),
    # Sampling every 10 s costs ~1 ms of the listener's CPU per process (smaps_rollup).
    ("--memory-every", positive_number, 10.0, "seconds between memory samples", RPW,
     dict(kept="seconds", written="memory_budget", bounds=Bounds(0.5, 600, "seconds"))),
    ("--max-requests", int, None, "LiteLLM's --max_requests_before_restart", RP,
     dict(kept="int", default_text="off", bounds=Bounds(1, 100_000_000))),  # far beyond any day's traffic
    ("--max-requests-jitter", int, None, "LiteLLM's --max_requests_before_restart_jitter", RP, dict(kept="int")),
    ("--state-file", str, None, "where the listener writes the state", R | {LISTEN},
     dict(kept="text", default_text="OUT_DIR/state.json")),
    ("--log-file", str, None, "the sidecar's log (its tail is recorded on a crash)", R | {LISTEN},
     dict(kept="text", default_text="OUT_DIR/litellm.log")),
    ("--no-autostart", switch, False, "do not start it with supervisord", R, dict(kept="flag")),
    # On by default: the sidecar exists for its traffic (issue 33); off saves its cost (benchmarks/RESULTS.md).
    ("--no-traffic-metrics", switch, False, "do not serve LiteLLM's Prometheus metrics (requests, failures, "
     "latency, tokens, cost per tier) on the sidecar's port", RP, dict(kept="flag")),
    ("--user", str, "", "run LiteLLM and the listener as this user (render as root: the rendered files and the "
     "folder are given to it)", RP, dict(kept="text")),
    ("--metrics-file", str, None, "the listener writes Prometheus text metrics here (node_exporter's textfile "
     "collector)", R | {LISTEN}, dict(kept="text")),
    ("--group", str, None, "supervisord group", {LISTEN}, dict(default_text="the program name")),
    ("--port-note", str, "", "why supervisord does not hold the port, said in the state", {LISTEN, WATCH},
     dict(written="changed")),
    ("--config", str, "", "LiteLLM config, read only to redact its secrets", {LISTEN}),
    ("--root", str, None, "a fleet's folder: each sidecar's files in ROOT/PROGRAM/", {LISTEN}),
    ("--sidecar", str, None, "PROGRAM=PORT, one sidecar of a fleet (repeat for each)", {LISTEN}),
    ("--state-subdir", str, "", "a fleet under --user: each state file in ROOT/PROGRAM/NAME/", {LISTEN}),
    ("--probe-interval", positive_number, 1.0, "seconds between probes while running", {LISTEN, WATCH}),
    ("--probe-timeout", positive_number, 20.0, "overall deadline of one probe (probes do not wait on each other)",
     {LISTEN, WATCH}),
    ("--starting-probe-interval", positive_number, 0.1, "seconds between probes while starting", {LISTEN, WATCH}),
    ("--failure-threshold", positive_int, 3, "failed probes in a row that count", {LISTEN, WATCH, MACHINE}),
    ("--timeout", positive_number, None, "seconds to wait for running; then as long again for every sidecar to "
     "run (exit 5 when one does not)", {APPLY}, dict(default_text="the health timeout plus 10; a rolling reload: "
                                                     "per worker, the health timeout plus the drain window")),
))
BY_FLAG: Dict[str, Option] = {o.flag: o for o in OPTIONS}
DEFAULTS: Dict[str, Any] = {o.attr: o.default for o in OPTIONS}


def of(layer: str) -> Tuple[Option, ...]:
    """The options that reach ``layer``, in the table's order."""
    return tuple(o for o in OPTIONS if layer in o.layers)


def with_options(layer: str) -> Callable[[type], type]:
    """Give a class (before ``@dataclass``) a field per option of ``layer``, with the declared default.

    The fields come after the class's own, so its own fields without a
    default stay first. A field the class declares itself under an option's
    name is refused: that default would be written twice.
    """
    def add(cls: type) -> type:
        notes = dict(cls.__dict__.get("__annotations__", {}))
        for o in of(layer):
            if o.attr in notes:
                raise TypeError(f"{cls.__name__}.{o.attr}: an option; its field comes from core.options.declared")
            notes[o.attr] = o.annotation
            setattr(cls, o.attr, o.default)
        cls.__annotations__ = notes
        cls.__declared__ = layer  # type: ignore[attr-defined]  # where its option fields come from (the tests ask)
        return cls
    return add


def copied(source: Any, layer: str, also: str = "") -> Dict[str, Any]:
    """The values of ``source`` for the options of ``layer`` (and of ``also``, when given): the keywords of the next."""
    return {o.attr: getattr(source, o.attr) for o in of(layer) if not also or also in o.layers}


def out_of_bounds(values: Mapping[str, Any]) -> Optional[str]:
    """The first option in ``values`` (attribute -> value) out of its bounds, as ``--flag: why``; None: all fit."""
    for o in OPTIONS:
        if o.bounds is not None and o.attr in values:
            why = o.bounds.problem(values[o.attr])
            if why:
                return f"{o.flag}: {why}"
    return None
