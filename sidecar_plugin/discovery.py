"""Find each sidecar's state file from its listener's configuration in supervisord.

The listener's command line (rendered into ``sidecar.conf``) is the one place
that says where a program's state file is; reading it from supervisord means
clients, ``supervisorctl sidecar`` and ``sidecar.getState`` need no option of
their own and cannot drift from what the listener writes.
"""

from __future__ import annotations

import shlex
from typing import Dict, Iterable, Mapping, Optional

DEFAULT_PROGRAM = "agentroute-sidecar"


def process_name(program: str, group: Optional[str] = None) -> str:
    """Return the name supervisord's XML-RPC knows a program by: ``group:program``.

    A program outside a ``[group:]`` is its own group; a fleet's share ``agentroute``.
    """
    return f"{group or program}:{program}"


def listener_entries(command: str) -> Dict[str, Dict[str, str]]:
    """Map program -> its options (``state-file``, ``port``, ``host``, ``group``...) for one command."""
    from sidecar_plugin.targets import parse_listen_command

    try:
        argv = shlex.split(command)
    except ValueError:
        return {}
    targets = parse_listen_command(argv) or []
    return {t.program: {"program": t.program, "group": t.group or t.program, "state-file": t.state_file,
                        "log-file": t.log_file, "port": str(t.port), "host": t.host, "config": t.config_path}
            for t in targets}


def sidecars(commands: Iterable[str]) -> Dict[str, Dict[str, str]]:
    """Map program name -> its listener's options, over every configured command."""
    found: Dict[str, Dict[str, str]] = {}
    for command in commands:
        for program, args in listener_entries(command).items():
            found.setdefault(program, args)
    return found


def commands_from_config_info(infos: Iterable[Mapping[str, object]]) -> Iterable[str]:
    """Pick the command lines out of ``supervisor.getAllConfigInfo()``."""
    return [str(info.get("command", "")) for info in infos]
