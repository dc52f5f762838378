"""Find a sidecar's state file from its listener's configuration.

The listener's command line (rendered into ``sidecar.conf``) is the one place
that says where a program's state file is; reading it from supervisord means
clients, ``supervisorctl sidecar`` and ``sidecar.getState`` need no option of
their own and cannot drift from what the listener writes.
"""

from __future__ import annotations

import shlex
from typing import Dict, Iterable, Mapping, Optional

DEFAULT_PROGRAM = "agentroute-sidecar"


def listener_args(command: str) -> Optional[Dict[str, str]]:
    """Return the ``--option value`` pairs of a ``sidecar-plugin listen`` command, else None."""
    try:
        argv = shlex.split(command)
    except ValueError:
        return None
    if "listen" not in argv:
        return None
    args: Dict[str, str] = {}
    rest = argv[argv.index("listen") + 1:]
    for i, word in enumerate(rest):
        if word.startswith("--") and "=" in word:
            key, value = word[2:].split("=", 1)
            args[key] = value
        elif word.startswith("--") and i + 1 < len(rest):
            args[word[2:]] = rest[i + 1]
    return args if "program" in args and "state-file" in args else None


def sidecars(commands: Iterable[str]) -> Dict[str, Dict[str, str]]:
    """Map program name -> its listener's options, over every configured command."""
    found: Dict[str, Dict[str, str]] = {}
    for command in commands:
        args = listener_args(command)
        if args is not None:
            found.setdefault(args["program"], args)
    return found


def state_file_for(commands: Iterable[str], program: str) -> Optional[str]:
    """Return the state file the listener of ``program`` writes, if one is configured."""
    args = sidecars(commands).get(program)
    return args["state-file"] if args else None


def commands_from_config_info(infos: Iterable[Mapping[str, object]]) -> Iterable[str]:
    """Pick the command lines out of ``supervisor.getAllConfigInfo()``."""
    return [str(info.get("command", "")) for info in infos]
