"""Every option, declared once: its flag, parser, default, bounds, help and the layers it reaches.

Like uvicorn's ``Config`` and its click options: a setting is one entry, and
everything else derives from it, so no default can disagree with another. The
CLI builds its parsers from ``OPTIONS``. Each layer's dataclass
(``shell.render.build.RenderRequest``, ``core.render.terms.RenderOptions``,
``core.options.listen_args.ListenerOptions``, ``core.listener.model.Config``)
writes out a field per option of its layer, so tools and readers see it, with
the declared default (``hang_window: float = default("--hang-window")``);
``fields_of(layer)`` checks at import that the class has each, as declared (a knob
added here and not there names the missing field); ``copied`` carries them from one to the next;
render's checks read the bounds; ``core.options.listen_args`` writes and parses
the listener's command line from it; ``core.options.remember`` keeps what the
record may hold. Pure and cheap (no argparse): clients and ``sidecar.getState``
inside supervisord parse the listener's line through this table.
"""

from __future__ import annotations

import dataclasses
import enum
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



class Written(enum.Enum):
    """When an option of the watch layer goes on the listener's line (``core.options.listen_args``)."""

    NEVER = "never"  # not as a knob: listen_argv writes it itself (--host), or the listener's default holds
    ALWAYS = "always"
    CHANGED = "changed"  # when not its default: lines rendered before the option existed stay unchanged
    WITH = "with"  # when the option it ``goes_with`` is not its default


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
    written: Written = Written.NEVER  # on the listener's line
    goes_with: str = ""  # the flag of the option it is written with (Written.WITH)
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


def at(*layers: str) -> FrozenSet[str]:
    """The layers an option reaches."""
    return frozenset(layers)


_KIND = {"int": "int", "seconds": "float", "text": "str", "flag": "bool"}
_SECONDS = Bounds(0, MAX_SECONDS, "seconds", above=True)
_RETRY = Bounds(0, 24 * MAX_SECONDS, "seconds", above=True)
OPTIONS: Tuple[Option, ...] = (
    Option("--port", parse=port_number, default=None, layers=at(RENDER, LISTEN), kept="int", bounds=Bounds(1, 65535),
           help="the sidecar's port",
           default_text=f"the profile's, else {DEFAULT_PORT}; several profiles: the first to give out"),
    Option("--host", parse=str, default=DEFAULT_HOST, layers=at(RENDER, PLAN, LISTEN, WATCH), kept="text",
           help="address LiteLLM binds"),
    Option("--program", parse=str, default=None, layers=at(RENDER, LISTEN), kept="text",
           help="supervisord program name", default_text=DEFAULT_PROGRAM,
           listen_help="the program it watches (or --root and --sidecar)"),
    Option("--binary", parse=str, default="litellm", layers=at(RENDER), kept="text",
           help="LiteLLM executable, resolved now to an absolute path"),
    Option("--supervisord", parse=str, default=None, layers=at(RENDER), kept="text",
           default_text="the one beside sidecar-plugin, else on PATH",
           help="the supervisord that reads the include: render asks its interpreter whether it loads the plugin "
                "that holds the port"),
    # Two workers: apply replaces them one at a time (sidecar_plugin.names.DEFAULT_WORKERS: why, and the cost).
    Option("--workers", parse=int, default=DEFAULT_WORKERS, layers=at(RENDER, PLAN), kept="int", bounds=Bounds(1, 64),
           help="LiteLLM --num_workers: apply replaces workers one at a time, dropping no request; 1 saves about "
                "600 MB but apply must then restart"),
    Option("--api-key-env", parse=str, default="OPENROUTER_API_KEY", layers=at(RENDER), kept="text",
           help="variable holding the OpenRouter key"),
    Option("--master-key-env", parse=str, default="AGENTROUTE_MASTER_KEY", layers=at(RENDER), kept="text",
           help="variable holding the master key (unset: generate one into master.key)"),
    Option("--health-timeout", parse=positive_number, default=DEFAULT_HEALTH_TIMEOUT,
           layers=at(RENDER, PLAN, LISTEN, WATCH, MACHINE), kept="seconds", bounds=_SECONDS, written=Written.ALWAYS,
           help="the outer bound of a start, in seconds; a start that makes no progress (no CPU, no log line, no "
                "worker for the hang window) fails sooner"),
    Option("--stop-timeout", parse=int, default=DEFAULT_STOP_TIMEOUT, layers=at(RENDER, PLAN), kept="int",
           bounds=Bounds(1, MAX_SECONDS, "seconds"),
           help="the drain window in seconds: in-flight requests may finish on stop; LiteLLM's "
                "GRACEFUL_SHUTDOWN_TIMEOUT, supervisord's stopwaitsecs a bit above"),
    # Kubernetes' CrashLoopBackOff numbers: 10 s doubling to 5 min, reset after 10 min of healthy running.
    Option("--retry-delay", parse=positive_number, default=10.0, layers=at(RENDER, PLAN, LISTEN, WATCH),
           kept="seconds", bounds=_RETRY, written=Written.ALWAYS,
           help="seconds before the listener starts again a sidecar that is down for good (FATAL, or not healthy "
                "in time), doubling at each try"),
    Option("--retry-max-delay", parse=positive_number, default=300.0, layers=at(RENDER, PLAN, LISTEN, WATCH),
           kept="seconds", bounds=_RETRY, written=Written.ALWAYS, help="the longest delay between tries"),
    Option("--retry-reset-after", parse=positive_number, default=600.0, layers=at(RENDER, PLAN, LISTEN, WATCH),
           kept="seconds", bounds=_RETRY, written=Written.ALWAYS,
           help="healthy this many seconds: the try count starts again"),
    # Progress is sampled about once a second: a window under 2 s would call every sidecar hung.
    Option("--hang-window", parse=positive_number, default=20.0, layers=at(RENDER, PLAN, LISTEN, WATCH, MACHINE),
           kept="seconds", written=Written.CHANGED,
           bounds=Bounds(2, MAX_SECONDS, "seconds", why=": the listener samples progress about once a second"),
           help="seconds without progress before a sidecar counts as hung: running, no health answer; starting, "
                "no CPU used, no log line, no worker born"),
    Option("--port-owner", parse=port_owner, default=OWNER_SIDECAR, layers=at(LISTEN, WATCH), written=Written.CHANGED,
           help="who holds the listening socket: sidecar (LiteLLM binds it) or supervisord ([fcgi-program]: health "
                "is probed on the tree's private socket)"),
    # The listener reads any positive number of MB, as before this table (a hand-written include may say 512.0).
    Option("--memory-budget", parse=int, default=None, layers=at(RENDER, PLAN, LISTEN, WATCH), kept="int",
           written=Written.CHANGED, default_text="off", listen_parse=positive_number,
           bounds=Bounds(MIN_BUDGET_MB, MAX_BUDGET_MB, "MB", why="; a LiteLLM worker is about 130 MB PSS idle"),
           help="MB (PSS) per LiteLLM worker: one over it is replaced gracefully"),
    # Sampling every 10 s costs ~1 ms of the listener's CPU per process (smaps_rollup).
    Option("--memory-every", parse=positive_number, default=10.0, layers=at(RENDER, PLAN, LISTEN, WATCH),
           kept="seconds", written=Written.WITH, goes_with="--memory-budget", bounds=Bounds(0.5, 600, "seconds"),
           help="seconds between memory samples"),
    Option("--max-requests", parse=int, default=None, layers=at(RENDER, PLAN), kept="int", default_text="off",
           bounds=Bounds(1, 100_000_000),  # far beyond any day's traffic
           help="LiteLLM's --max_requests_before_restart"),
    Option("--max-requests-jitter", parse=int, default=None, layers=at(RENDER, PLAN), kept="int",
           help="LiteLLM's --max_requests_before_restart_jitter"),
    Option("--state-file", parse=str, default=None, layers=at(RENDER, LISTEN), kept="text",
           default_text="OUT_DIR/state.json", help="where the listener writes the state"),
    Option("--log-file", parse=str, default=None, layers=at(RENDER, LISTEN), kept="text",
           default_text="OUT_DIR/litellm.log", help="the sidecar's log (its tail is recorded on a crash)"),
    Option("--no-autostart", parse=switch, default=False, layers=at(RENDER), kept="flag",
           help="do not start it with supervisord"),
    # On by default: the sidecar exists for its traffic (issue 33); off saves its cost (benchmarks/RESULTS.md).
    Option("--no-traffic-metrics", parse=switch, default=False, layers=at(RENDER, PLAN), kept="flag",
           help="do not serve LiteLLM's Prometheus metrics (requests, failures, latency, tokens, cost per tier) on "
                "the sidecar's port"),
    Option("--user", parse=str, default="", layers=at(RENDER, PLAN), kept="text",
           help="run LiteLLM and the listener as this user (render as root: the rendered files and the folder are "
                "given to it)"),
    Option("--metrics-file", parse=str, default=None, layers=at(RENDER, LISTEN), kept="text",
           help="the listener writes Prometheus text metrics here (node_exporter's textfile collector)"),
    Option("--group", parse=str, default=None, layers=at(LISTEN), default_text="the program name",
           help="supervisord group"),
    Option("--port-note", parse=str, default="", layers=at(LISTEN, WATCH), written=Written.CHANGED,
           help="why supervisord does not hold the port, said in the state"),
    Option("--config", parse=str, default="", layers=at(LISTEN),
           help="LiteLLM config, read only to redact its secrets"),
    Option("--root", parse=str, default=None, layers=at(LISTEN),
           help="a fleet's folder: each sidecar's files in ROOT/PROGRAM/"),
    Option("--sidecar", parse=str, default=None, layers=at(LISTEN),
           help="PROGRAM=PORT, one sidecar of a fleet (repeat for each)"),
    Option("--state-subdir", parse=str, default="", layers=at(LISTEN),
           help="a fleet under --user: each state file in ROOT/PROGRAM/NAME/"),
    Option("--probe-interval", parse=positive_number, default=1.0, layers=at(LISTEN, WATCH),
           help="seconds between probes while running"),
    Option("--probe-timeout", parse=positive_number, default=20.0, layers=at(LISTEN, WATCH),
           help="overall deadline of one probe (probes do not wait on each other)"),
    Option("--starting-probe-interval", parse=positive_number, default=0.1, layers=at(LISTEN, WATCH),
           help="seconds between probes while starting"),
    Option("--failure-threshold", parse=positive_int, default=3, layers=at(LISTEN, WATCH, MACHINE),
           help="failed probes in a row that count"),
    Option("--timeout", parse=positive_number, default=None, layers=at(APPLY),
           help="seconds to wait for running; then as long again for every sidecar to run (exit 5 when one does not)",
           default_text="the health timeout plus 10; a rolling reload: per worker, the health timeout plus the "
                        "drain window"),
)
BY_FLAG: Dict[str, Option] = {o.flag: o for o in OPTIONS}
DEFAULTS: Dict[str, Any] = {o.attr: o.default for o in OPTIONS}


def of(layer: str) -> Tuple[Option, ...]:
    """The options that reach ``layer``, in the table's order."""
    return tuple(o for o in OPTIONS if layer in o.layers)


def default(flag: str) -> Any:
    """The declared default of ``flag``: the one a layer's field takes (``x: float = default("--x")``)."""
    return BY_FLAG[flag].default


def fields_of(layer: str) -> Callable[[type], type]:
    """Check (on a dataclass, at import) that it has a field per option of ``layer``, typed and defaulted as declared.

    The fields are written out in the class, so a reader and a type checker
    see them; this keeps them true to the table. A knob added to the table
    and not to a layer's class fails here, naming the field to add.
    """
    def check(cls: type) -> type:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for o in of(layer):
            line = f'{o.attr}: {o.annotation} = default("{o.flag}")'
            f = fields.get(o.attr)
            if f is None:
                raise TypeError(f"{cls.__qualname__} has no field for {o.flag} ({layer}); add: {line}")
            if f.default != o.default or type(f.default) is not type(o.default) or _spelled(f.type) != o.annotation:
                raise TypeError(f"{cls.__qualname__}.{o.attr} is not as {o.flag} is declared; write: {line}")
        cls.__declared__ = layer  # type: ignore[attr-defined]  # where its option fields come from (the tests ask)
        return cls
    return check


def _spelled(kind: Any) -> str:
    """A field's type as its source spells it (a string under ``from __future__ import annotations``)."""
    if isinstance(kind, str):
        return kind
    return kind.__name__ if isinstance(kind, type) else repr(kind).replace("typing.", "")


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
