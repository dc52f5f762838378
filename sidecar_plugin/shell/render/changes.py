"""What a render changes against what the host has: the groups apply may touch, the restarts and why.

Apply compares the new render with two records of the past: the previous
render's ``sidecar.json`` (which groups it defined, which command each
sidecar ran) and each listener's state file (which config version the live
sidecar loaded). The first says which supervisord groups are *ours* (a
sidecar removed from the profiles is removed from supervisord too) and what
in a command changed (a port, host, worker count or binary needs a real
restart, and the operator is told which); the second finds a sidecar left
behind by a render followed by ``supervisorctl update``.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Set

from sidecar_plugin.core.render.litellm_yaml import config_version
from sidecar_plugin.core.render.sections import sidecar_command
from sidecar_plugin.core.render.terms import RenderOptions
from sidecar_plugin.names import LITELLM_YAML, OWNER_SIDECAR, OWNER_SUPERVISORD, RECORD_NAME
from sidecar_plugin.shell.render.build import Rendered
from sidecar_plugin.shell.files.outfiles import Snapshot
from sidecar_plugin.shell.files.statefile import state_dict

# The flags of LiteLLM's command line, as an operator names them when a restart is needed.
_FLAG_WORDS = {"--port": "port", "--host": "host", "--num_workers": "workers", "--config": "config path",
               "--timeout_worker_healthcheck": "worker health-check timeout",
               # the launcher's flags, in the operator's words (the options that set them)
               "--worker_control": "memory budget on or off", "--max_requests_before_restart": "max requests",
               "--max_requests_before_restart_jitter": "max requests jitter"}


def our_groups(rendered: Rendered, snap: Snapshot) -> Set[str]:
    """The supervisord groups this include defines now or defined before: the only ones apply touches.

    The previous render's record says which groups it defined, so a sidecar
    removed from the profiles is removed from supervisord too.
    """
    names = set(rendered.plan.groups)
    old = snap.get(os.path.join(rendered.out_dir, RECORD_NAME))
    if old is not None:
        try:
            groups = json.loads(old[0]).get("groups")
        except (ValueError, AttributeError, RecursionError):
            groups = None
        if isinstance(groups, list):
            names |= {g for g in groups if isinstance(g, str)}
    return names


def _recorded(record: Optional[bytes]) -> Dict[str, Dict[str, Any]]:
    """Map program -> its entry in the previous render's ``sidecar.json`` (none when it cannot be read)."""
    try:
        sidecars = json.loads(record or b"{}").get("sidecars") or {}
    except (ValueError, AttributeError, RecursionError):
        return {}
    return {str(p): v for p, v in sidecars.items() if isinstance(v, dict)} if isinstance(sidecars, dict) else {}


def recorded_commands(record: Optional[bytes]) -> Dict[str, List[str]]:
    """Map program -> LiteLLM argv, as the previous render's ``sidecar.json`` recorded them."""
    return {p: [str(a) for a in v["command"]] for p, v in _recorded(record).items()
            if isinstance(v.get("command"), list)}


def recorded_owners(record: Optional[bytes]) -> Dict[str, str]:
    """Map program -> who held its port (``port_owner``; a record without it: LiteLLM itself)."""
    return {p: str(v.get("port_owner") or OWNER_SIDECAR) for p, v in _recorded(record).items()}


def recorded_metrics(record: Optional[bytes]) -> Dict[str, bool]:
    """Map program -> whether it served its traffic metrics (a record without the field: no, an older release)."""
    return {p: v.get("traffic_metrics") is True for p, v in _recorded(record).items()}


def restart_reasons(rendered: Rendered, snap: Snapshot) -> Dict[str, str]:
    """Map program -> what in its command changed (port, host, workers, binary), who owns its port, or
    whether it serves traffic metrics: those need a real restart (the metrics' folder is the launcher's
    environment, read once, before LiteLLM is imported; a rolling reload forks from the same launcher)."""
    old = snap.get(os.path.join(rendered.out_dir, RECORD_NAME))
    before = recorded_commands(old[0] if old else None)
    owners = recorded_owners(old[0] if old else None)
    metrics = recorded_metrics(old[0] if old else None)
    reasons = {}
    for s in rendered.sidecars:
        was, argv = before.get(s.program), sidecar_command(s)
        words = []
        if was is not None and was != argv:
            words = ["binary"] if was[:1] != argv[:1] else []
            flags = {a for a in was + argv if a.startswith("--")}
            words += [_FLAG_WORDS.get(f, f) for f in sorted(flags) if _flag(was, f) != _flag(argv, f)]
            words = words or ["command"]
        if s.program in owners and owners[s.program] != port_owner(s):
            words.append("the port's owner")
        if s.program in metrics and metrics[s.program] != s.traffic_metrics:
            words.append("traffic metrics on or off")
        if words:
            reasons[s.program] = ", ".join(words)
    return reasons


def port_owner(s: RenderOptions) -> str:
    return OWNER_SUPERVISORD if s.supervisord_socket else OWNER_SIDECAR


def keeps_accepting(rendered: Rendered, snap: Snapshot) -> Set[str]:
    """The programs whose restart keeps the port accepting: supervisord held it before and holds it after,
    at the same address (connections wait in its queue while LiteLLM restarts)."""
    old = snap.get(os.path.join(rendered.out_dir, RECORD_NAME))
    before = recorded_commands(old[0] if old else None)
    owners = recorded_owners(old[0] if old else None)
    return {s.program for s in rendered.sidecars if s.supervisord_socket
            and owners.get(s.program) == OWNER_SUPERVISORD and s.program in before
            and all(_flag(before[s.program], f) == _flag(sidecar_command(s), f) for f in ("--host", "--port"))}


def _flag(argv: List[str], flag: str) -> Optional[str]:
    if flag not in argv:
        return None
    i = argv.index(flag)
    return argv[i + 1] if i + 1 < len(argv) else ""


def drifted(rendered: Rendered) -> Set[str]:
    """Return the configs whose live sidecar was started with another version than the one rendered.

    A render (or a rollback by hand) followed by ``supervisorctl update``
    leaves such a sidecar behind: the files match, the process does not.
    """
    wanted = {f.path: config_version(f.data) for f in rendered.files if f.path.endswith(LITELLM_YAML)}
    out = set()
    for s in rendered.sidecars:
        doc = state_dict(s.state_file)
        loaded = doc.get("config_version")
        if doc.get("pid") and loaded and loaded != wanted.get(s.config_path):
            out.add(s.config_path)
    return out
