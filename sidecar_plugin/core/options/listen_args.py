"""The listener's command line: written by render, read by the listener and by every client.

The ``[eventlistener:]`` command rendered into ``sidecar.conf`` is the one
place that says which programs a listener watches and where their state files
are. Render builds it here, the listener parses it here, and clients (the
helper module, ``sidecar.getState`` inside supervisord) find a program's state
file by parsing supervisord's copy of it here: one table of options, so the
three cannot drift. Pure and cheap (no argparse): ``getState`` calls it inside
supervisord's single loop, and ``supervisorctl sidecar wait`` calls
``getState`` every 50 ms.
"""

from __future__ import annotations

import math
import os
import shlex
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from sidecar_plugin.core.listener.budget import DEFAULT_EVERY
from sidecar_plugin.core.listener.retry import RETRY_DELAY, RETRY_MAX_DELAY, RETRY_RESET_AFTER
from sidecar_plugin.names import DEFAULT_HEALTH_TIMEOUT, DEFAULT_HOST, OWNER_SIDECAR, PORT_OWNERS, fleet_paths, process_name


class ListenArgsError(ValueError):
    """The listener's options name no sidecar, or name it badly; one line for the log."""


@dataclass(frozen=True)
class ListenerOptions:
    """What the listener watches for one sidecar, and how."""

    program: str
    port: int
    state_file: str
    log_file: str
    host: str = DEFAULT_HOST
    group: Optional[str] = None
    config_path: str = ""
    health_timeout: float = DEFAULT_HEALTH_TIMEOUT
    probe_interval: float = 1.0
    probe_timeout: float = 20.0
    starting_probe_interval: float = 0.1
    failure_threshold: int = 3
    hang_window: float = 20.0
    tail_lines: int = 40
    retry_delay: float = RETRY_DELAY
    retry_max_delay: float = RETRY_MAX_DELAY
    retry_reset_after: float = RETRY_RESET_AFTER
    port_owner: str = OWNER_SIDECAR
    memory_budget: Optional[float] = None  # MB per worker (core.listener.budget); None: measured, never acted on
    memory_every: float = DEFAULT_EVERY

    @property
    def rpc_name(self) -> str:
        """The name supervisord's XML-RPC knows the program by."""
        return process_name(self.program, self.group)


def _owner(text: str) -> str:
    if text not in PORT_OWNERS:
        raise ValueError(f"must be one of {', '.join(PORT_OWNERS)} (got {text[:40]!r})")
    return text


def positive_number(text: str) -> float:
    """Parse a finite number above 0: a timeout of nan, inf, 0 or less would never (or always) fire."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"must be a finite number of seconds above 0 (got {text})")
    return value


def positive_int(text: str) -> int:
    """Parse a whole number above 0."""
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise ValueError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise ValueError(f"must be more than 0 (got {text})")
    return value


def _port(text: str) -> int:
    value = positive_int(text)
    if value > 65535:
        raise ValueError(f"must be from 1 to 65535 (got {text})")
    return value


# flag -> (attribute, parser, default, help); "--sidecar" repeats. The CLI builds its
# argparse help from this same table.
OPTIONS: Dict[str, Tuple[str, Optional[Callable[[str], object]], object, str]] = {
    "--program": ("program", str, None, "the sidecar program (a fleet: --root and --sidecar instead)"),
    "--group": ("group", str, None, "supervisord group (default: the program name)"),
    "--host": ("host", str, DEFAULT_HOST, "address the sidecar binds"),
    "--port": ("port", _port, None, "the sidecar's port"),
    "--state-file": ("state_file", str, None, "where to write the state"),
    "--log-file": ("log_file", str, None, "the sidecar's log (its tail is recorded on a crash)"),
    "--config": ("config", str, "", "LiteLLM config, read only to redact its secrets"),
    "--root": ("root", str, None, "a fleet's folder: each sidecar's files in ROOT/PROGRAM/"),
    "--sidecar": ("sidecar", str, None, "PROGRAM=PORT, one sidecar of a fleet (repeat for each)"),
    "--state-subdir": ("state_subdir", str, "", "a fleet under --user: each state file in ROOT/PROGRAM/NAME/"),
    "--metrics-file": ("metrics_file", str, None, "write Prometheus text metrics here"),
    "--health-timeout": ("health_timeout", positive_number, DEFAULT_HEALTH_TIMEOUT,
                         "the outer bound of a start in seconds (progress judges it first)"),
    "--probe-interval": ("probe_interval", positive_number, 1.0, "seconds between probes while running"),
    "--probe-timeout": ("probe_timeout", positive_number, 20.0,
                        "overall deadline of one probe (probes do not wait on each other)"),
    "--starting-probe-interval": ("starting_probe_interval", positive_number, 0.1,
                                  "seconds between probes while starting"),
    "--failure-threshold": ("failure_threshold", positive_int, 3, "failed probes in a row that count"),
    "--retry-delay": ("retry_delay", positive_number, RETRY_DELAY,
                      "seconds before the listener starts again a sidecar that is down for good "
                      "(FATAL, or not healthy in time); doubles at each try"),
    "--retry-max-delay": ("retry_max_delay", positive_number, RETRY_MAX_DELAY, "the longest delay between tries"),
    "--retry-reset-after": ("retry_reset_after", positive_number, RETRY_RESET_AFTER,
                            "seconds of healthy running after which the try count starts again from 1"),
    "--hang-window": ("hang_window", positive_number, 20.0,
                      "seconds without progress before a sidecar counts as hung (running: no answer; "
                      "starting: no CPU, no log line, no worker)"),
    "--port-owner": ("port_owner", _owner, OWNER_SIDECAR,
                     "who holds the listening socket: sidecar (LiteLLM binds it) or supervisord "
                     "([fcgi-program]: health is probed on the tree's private socket)"),
    "--memory-budget": ("memory_budget", positive_number, None,
                        "MB of memory (PSS) per LiteLLM worker; a worker over it is replaced, gracefully"),
    "--memory-every": ("memory_every", positive_number, DEFAULT_EVERY, "seconds between memory samples"),
}
_COMMON = ("host", "health_timeout", "probe_interval", "probe_timeout", "starting_probe_interval", "failure_threshold",
           "retry_delay", "retry_max_delay", "retry_reset_after", "hang_window", "port_owner", "memory_budget",
           "memory_every")


@dataclass(frozen=True)
class ListenCommand:
    """A parsed ``listen`` command: the sidecars it watches and its one metrics file."""

    targets: Tuple[ListenerOptions, ...]
    metrics_file: Optional[str] = None


def parse_values(args: Sequence[str]) -> Dict[str, object]:
    """Parse ``--flag value`` / ``--flag=value`` pairs of ``OPTIONS`` into attribute -> value."""
    values: Dict[str, object] = {attr: default for attr, _, default, _ in OPTIONS.values()}
    values["sidecar"] = []
    i = 0
    while i < len(args):
        flag, eq, inline = args[i].partition("=")
        if flag not in OPTIONS:
            raise ListenArgsError(f"unknown option {args[i]!r}")
        if eq:
            text, i = inline, i + 1
        elif i + 1 < len(args):
            text, i = args[i + 1], i + 2
        else:
            raise ListenArgsError(f"{flag} needs a value")
        attr, parse, _, _ = OPTIONS[flag]
        try:
            value = parse(text) if parse else text
        except ValueError as exc:
            raise ListenArgsError(f"{flag}: {exc}") from None
        if attr == "sidecar":
            values["sidecar"].append(value)  # type: ignore[union-attr]
        else:
            values[attr] = value
    return values


def targets_of(values: Dict[str, object]) -> ListenCommand:
    """Return the sidecars of parsed values: one (``--program``) or a fleet (``--root`` + ``--sidecar``)."""
    common = {k: values[k] for k in _COMMON}
    group = values["group"]
    metrics = values["metrics_file"] or None
    if values["sidecar"]:
        if values["program"] or not values["root"]:
            raise ListenArgsError("--sidecar PROGRAM=PORT goes with --root (and without --program)")
        targets = []
        for spec in values["sidecar"]:  # type: ignore[union-attr]
            program, sep, port = str(spec).partition("=")
            if not sep or not program or not port.isdigit() or not 1 <= int(port) <= 65535:
                raise ListenArgsError(f"--sidecar {spec!r}: expected PROGRAM=PORT")
            paths = fleet_paths(os.path.abspath(str(values["root"])), program, str(values["state_subdir"] or ""))
            targets.append(ListenerOptions(program=program, group=group, port=int(port),  # type: ignore[arg-type]
                                           state_file=paths["state-file"], log_file=paths["log-file"],
                                           config_path=paths["config"], **common))  # type: ignore[arg-type]
        return ListenCommand(tuple(targets), metrics)  # type: ignore[arg-type]
    missing = [flag for flag in ("--program", "--port", "--state-file", "--log-file")
               if values[OPTIONS[flag][0]] is None]
    if missing:
        raise ListenArgsError(f"listen needs {', '.join(missing)} (or --root and --sidecar for a fleet)")
    one = ListenerOptions(program=str(values["program"]), group=group, port=values["port"],  # type: ignore[arg-type]
                          state_file=os.path.abspath(str(values["state_file"])), log_file=str(values["log_file"]),
                          config_path=str(values["config"]), **common)  # type: ignore[arg-type]
    return ListenCommand((one,), metrics)  # type: ignore[arg-type]


def parse_listen_argv(args: Sequence[str]) -> ListenCommand:
    """Parse the options after ``listen``; raise ListenArgsError with one line."""
    return targets_of(parse_values(args))


def parse_command(command: str) -> Optional[ListenCommand]:
    """Return what a configured command line (``... listen --opt ...``) watches; None if it is no listener."""
    try:
        argv = shlex.split(command)
    except ValueError:
        return None
    if "listen" not in argv:
        return None
    try:
        return parse_listen_argv(argv[argv.index("listen") + 1:])
    except ListenArgsError:
        return None


def number(value: float) -> str:
    """Write a number the way the parser reads it back exactly (20, not 20.0)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def listen_argv(prefix: Sequence[str], sidecars: Sequence[ListenerOptions], root: Optional[str],
                metrics_file: str = "", state_subdir: str = "") -> List[str]:
    """Return the listener command for ``sidecars``: one by ``--program``, a fleet by ``--root``/``--sidecar``.

    ``sidecars`` share host and timeouts (one listener, one set of options).
    """
    first = sidecars[0]
    argv = list(prefix) + ["listen"]
    if root is None:
        argv += ["--program", first.program, "--host", first.host, "--port", str(first.port),
                 "--state-file", first.state_file, "--log-file", first.log_file, "--config", first.config_path]
    else:
        argv += ["--group", str(first.group), "--root", root, "--host", first.host]
        if state_subdir:
            argv += ["--state-subdir", state_subdir]
        for s in sidecars:
            argv += ["--sidecar", f"{s.program}={s.port}"]
    argv += ["--health-timeout", number(first.health_timeout), "--retry-delay", number(first.retry_delay),
             "--retry-max-delay", number(first.retry_max_delay),
             "--retry-reset-after", number(first.retry_reset_after)]
    if first.hang_window != ListenerOptions.hang_window:  # the default stays implicit: older renders unchanged
        argv += ["--hang-window", number(first.hang_window)]
    if first.port_owner != OWNER_SIDECAR:
        argv += ["--port-owner", first.port_owner]
    if first.memory_budget is not None:
        argv += ["--memory-budget", number(first.memory_budget), "--memory-every", number(first.memory_every)]
    return argv + (["--metrics-file", metrics_file] if metrics_file else [])
