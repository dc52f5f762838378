"""The listener's command line: written by render, read by the listener and by every client.

The ``[eventlistener:]`` command rendered into ``sidecar.conf`` is the one
place that says which programs a listener watches and where their state files
are. Render builds it here, the listener parses it here, and clients (the
helper module, ``sidecar.getState`` inside supervisord) find a program's state
file by parsing supervisord's copy of it here, all from the one table of options
(``core.options.table``), so the three cannot drift. Pure and cheap (no argparse): ``getState`` calls it inside
supervisord's single loop, and ``supervisorctl sidecar wait`` calls
``getState`` every 50 ms.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from sidecar_plugin.core.options.table import BY_FLAG, LISTEN, WATCH, Option, Written, default, fields_of, of
from sidecar_plugin.errors import SidecarError
from sidecar_plugin.names import fleet_paths, process_name


class ListenArgsError(SidecarError, ValueError):
    """The listener's options name no sidecar, or name it badly; one line for the log."""


@fields_of(WATCH)
@dataclass(frozen=True)
class ListenerOptions:
    """What the listener watches for one sidecar, and how."""

    program: str
    port: int
    state_file: str
    log_file: str
    group: Optional[str] = None
    config_path: str = ""
    tail_lines: int = 40
    # every option each watched sidecar shares (core.options.table)
    host: str = default("--host")
    health_timeout: float = default("--health-timeout")
    retry_delay: float = default("--retry-delay")
    retry_max_delay: float = default("--retry-max-delay")
    retry_reset_after: float = default("--retry-reset-after")
    hang_window: float = default("--hang-window")
    port_owner: str = default("--port-owner")
    port_note: str = default("--port-note")
    memory_budget: Optional[int] = default("--memory-budget")
    memory_every: float = default("--memory-every")
    probe_interval: float = default("--probe-interval")
    probe_timeout: float = default("--probe-timeout")
    starting_probe_interval: float = default("--starting-probe-interval")
    failure_threshold: int = default("--failure-threshold")

    @property
    def rpc_name(self) -> str:
        """The name supervisord's XML-RPC knows the program by."""
        return process_name(self.program, self.group)


@dataclass(frozen=True)
class ListenCommand:
    """A parsed ``listen`` command: the sidecars it watches and its one metrics file."""

    targets: Tuple[ListenerOptions, ...]
    metrics_file: Optional[str] = None


def parse_values(args: Sequence[str]) -> Dict[str, Any]:
    """Parse ``--flag value`` / ``--flag=value`` pairs of the ``listen`` options into attribute -> value."""
    values: Dict[str, Any] = {o.attr: o.default for o in of(LISTEN)}
    values["sidecar"] = []
    i = 0
    while i < len(args):
        flag, eq, inline = args[i].partition("=")
        option = BY_FLAG.get(flag)
        if option is None or LISTEN not in option.layers:
            raise ListenArgsError(f"unknown option {args[i]!r}")
        if eq:
            text, i = inline, i + 1
        elif i + 1 < len(args):
            text, i = args[i + 1], i + 2
        else:
            raise ListenArgsError(f"{flag} needs a value")
        try:
            value = option.parser(LISTEN)(text)
        except ValueError as exc:
            raise ListenArgsError(f"{flag}: {exc}") from None
        if option.attr == "sidecar":
            values["sidecar"].append(value)
        else:
            values[option.attr] = value
    return values


def targets_of(values: Dict[str, Any]) -> ListenCommand:
    """Return the sidecars of parsed values: one (``--program``) or a fleet (``--root`` + ``--sidecar``)."""
    common = {o.attr: values[o.attr] for o in of(WATCH)}
    group = values["group"]
    metrics = values["metrics_file"] or None
    if values["sidecar"]:
        if values["program"] or not values["root"]:
            raise ListenArgsError("--sidecar PROGRAM=PORT goes with --root (and without --program)")
        targets = []
        for spec in values["sidecar"]:
            program, sep, port = str(spec).partition("=")
            if not sep or not program or not port.isdigit() or not 1 <= int(port) <= 65535:
                raise ListenArgsError(f"--sidecar {spec!r}: expected PROGRAM=PORT")
            paths = fleet_paths(os.path.abspath(str(values["root"])), program, str(values["state_subdir"] or ""))
            targets.append(ListenerOptions(program=program, group=group, port=int(port),
                                           state_file=paths["state-file"], log_file=paths["log-file"],
                                           config_path=paths["config"], **common))
        return ListenCommand(tuple(targets), metrics)
    missing = [flag for flag in ("--program", "--port", "--state-file", "--log-file")
               if values[BY_FLAG[flag].attr] is None]
    if missing:
        raise ListenArgsError(f"listen needs {', '.join(missing)} (or --root and --sidecar for a fleet)")
    one = ListenerOptions(program=str(values["program"]), group=group, port=values["port"],
                          state_file=os.path.abspath(str(values["state_file"])), log_file=str(values["log_file"]),
                          config_path=str(values["config"]), **common)
    return ListenCommand((one,), metrics)


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
        argv += (["--group", first.group] if first.group else []) + ["--root", root, "--host", first.host]
        if state_subdir:
            argv += ["--state-subdir", state_subdir]
        for s in sidecars:
            argv += ["--sidecar", f"{s.program}={s.port}"]
    for o in of(WATCH):  # the knobs, each as its declaration says
        if _written(o, first):
            value = getattr(first, o.attr)
            argv += [o.flag, number(value) if isinstance(value, (int, float)) else str(value)]
    return argv + (["--metrics-file", metrics_file] if metrics_file else [])


def _written(o: Option, s: ListenerOptions) -> bool:
    """Whether ``o`` goes on the line, as its declaration says (``Written``)."""
    if o.written is Written.ALWAYS:
        return True
    if o.written is Written.CHANGED:
        return bool(getattr(s, o.attr) != o.default)
    if o.written is Written.WITH:
        other = BY_FLAG[o.goes_with]
        return bool(getattr(s, other.attr) != other.default)
    return False
