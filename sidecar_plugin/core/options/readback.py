"""The options an older render was given, read back from its ``sidecar.conf``.

A record written before options were kept (or one that cannot be read) says
nothing of the options that render was given, and the next render would put
every default back in silence (the port, the workers, the timeouts). Its
include holds them: the listener's command line (``core.options.listen_args``: host,
port, program, state and log files, the timeouts and retry delays, the
metrics file) and the program's section (the binary, ``--num_workers``, the
drain window, ``user=``, ``autostart=``). A value that is a default (of this
release, or of the release before: its health timeout was 20 s) is not taken
as given. The key variables' names are in no file and cannot be read back.

Pure: the include's text in, option name -> value out.
"""

from __future__ import annotations

import configparser
import os
import re
import shlex
from typing import Any, Dict, Mapping, Optional

from sidecar_plugin.core.options.listen_args import ListenCommand, parse_command
from sidecar_plugin.names import DEFAULT_PORT, DEFAULT_PROGRAM, LOG_NAME, RUN_DIR, STATE_NAME

# the folder of the launcher LiteLLM's interpreter runs (``shell.litellm_launch``)
LAUNCHER_DIR = "litellm_launch"

# the defaults of the release before options were kept, where they differ from this one's
PREVIOUS_DEFAULTS: Dict[str, Any] = {"health-timeout": 20.0}
_DRAIN = re.compile(r'GRACEFUL_SHUTDOWN_TIMEOUT="?([0-9]+)')


def read_back(text: str, out_dir: str, defaults: Mapping[str, Any]) -> Dict[str, Any]:
    """The options ``text`` (an include) says its render was given: those that are no default."""
    found = _found(text, out_dir)
    return {k: v for k, v in sorted(found.items())
            if v != defaults.get(k) and (k not in PREVIOUS_DEFAULTS or v != PREVIOUS_DEFAULTS[k])}


def _sections(text: str) -> Dict[str, Dict[str, str]]:
    parser = configparser.RawConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(text)
    except configparser.Error:
        return {}
    return {name: {k: v.replace("%%", "%") for k, v in parser.items(name)} for name in parser.sections()}


def _found(text: str, out_dir: str) -> Dict[str, Any]:
    """Every option value the include holds (defaults too), by option name."""
    sections = _sections(text)
    listener = next((s for n, s in sections.items() if n.startswith("eventlistener:")), {})
    parsed = parse_command(listener.get("command", ""))
    program = next((s for n, s in sections.items() if n.startswith(("program:", "fcgi-program:"))), None)
    if parsed is None or program is None:
        return {}
    first = parsed.targets[0]
    out: Dict[str, Any] = {"host": first.host, "health-timeout": first.health_timeout,
                           "hang-window": first.hang_window, "retry-delay": first.retry_delay,
                           "retry-max-delay": first.retry_max_delay, "retry-reset-after": first.retry_reset_after}
    out.update(_program(program))
    if parsed.metrics_file:
        out["metrics-file"] = parsed.metrics_file
    if not any(n.startswith("group:") for n in sections):  # one sidecar: a fleet names its own
        out.update(_single(parsed, out_dir, out.get("user", "")))
    return out


def _program(section: Mapping[str, str]) -> Dict[str, Any]:
    """The binary, workers, drain window, user and autostart of a ``[program:]`` (or ``[fcgi-program:]``) section.

    Where LiteLLM's interpreter runs the launcher, the binary is not on the line: it is left out.
    """
    out: Dict[str, Any] = {}
    try:
        argv = shlex.split(section.get("command", ""))
    except ValueError:
        argv = []
    if argv:
        if not (len(argv) > 1 and os.path.basename(argv[1].rstrip("/")) == LAUNCHER_DIR):
            out["binary"] = argv[0]
        at = argv.index("--num_workers") + 1 if "--num_workers" in argv else 0
        out["workers"] = int(argv[at]) if at and at < len(argv) and argv[at].isdigit() else 1
    drain = _DRAIN.search(section.get("environment", ""))
    if drain:
        out["stop-timeout"] = int(drain.group(1))
    if section.get("user"):
        out["user"] = section["user"]
    if section.get("autostart", "true").strip().lower() == "false":
        out["no-autostart"] = True
    return out


def _single(parsed: ListenCommand, out_dir: str, user: str) -> Dict[str, Any]:
    """The program, port, state and log files of one sidecar, where they are not the default ones."""
    first = parsed.targets[0]
    state = os.path.join(out_dir, RUN_DIR, STATE_NAME) if user else os.path.join(out_dir, STATE_NAME)
    out: Dict[str, Optional[Any]] = {
        "program": first.program if first.program != DEFAULT_PROGRAM else None,
        "port": first.port if first.port != DEFAULT_PORT else None,
        "state-file": first.state_file if first.state_file != state else None,
        "log-file": first.log_file if first.log_file != os.path.join(out_dir, LOG_NAME) else None,
    }
    return {k: v for k, v in out.items() if v is not None}
