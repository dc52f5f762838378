"""Find each sidecar's state file from its listener's configuration in supervisord.

The listener's command line (rendered into ``sidecar.conf``) is the one place
that says where a program's state file is; reading it from supervisord means
clients, ``supervisorctl sidecar`` and ``sidecar.getState`` need no option of
their own and cannot drift from what the listener writes.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Dict, Iterable, Mapping, Tuple

from sidecar_plugin.core.options.listen_args import parse_command

Entry = Dict[str, str]


@lru_cache(maxsize=64)
def _entries(command: str) -> Tuple[Tuple[str, Tuple[Tuple[str, str], ...]], ...]:
    """Program -> options of one command; cached, since ``getState`` asks on every poll."""
    parsed = parse_command(command)
    if parsed is None:
        return ()
    return tuple((t.program, (("program", t.program), ("group", t.group or t.program),
                              ("state-file", t.state_file), ("log-file", t.log_file),
                              ("port", str(t.port)), ("host", t.host), ("config", t.config_path)))
                 for t in parsed.targets)


def sidecars(commands: Iterable[str]) -> Dict[str, Entry]:
    """Map program name -> its listener's options (``state-file``, ``port``, ``group``...)."""
    found: Dict[str, Entry] = {}
    for command in commands:
        for program, items in _entries(command):
            found.setdefault(program, dict(items))
    return found


def commands_from_config_info(infos: Iterable[Mapping[str, object]]) -> Iterable[str]:
    """Pick the command lines out of ``supervisor.getAllConfigInfo()``."""
    return [str(info.get("command", "")) for info in infos]
