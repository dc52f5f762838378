"""``sidecar-plugin apply``: bring supervisord in line with the profiles, or put it back.

Configuration-management tools run it on every pass, so it converges and is
idempotent: it renders in memory, writes only what changed, asks supervisord
(``reloadConfig``) which of *our* groups its include changed, replaces just
those (what ``supervisorctl update`` does, without touching anyone else's
programs), restarts a sidecar whose LiteLLM config changed under an unchanged
command (supervisord cannot see inside ``litellm.yaml``), and waits until each
restarted sidecar is ``running``. When one does not become healthy, the
previous files are restored and the same steps run again, so the host is back
on the configuration that worked, and the failure's log tail is reported.

supervisord replaces a whole group at a time: in a fleet (``[group:agentroute]``)
a changed command, or a sidecar added or removed, restarts every sidecar of
the group; a changed model list restarts only its own sidecar.
"""

from __future__ import annotations

import json
import os
import time
import xmlrpc.client
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Sequence, Set, Tuple

from supervisor.xmlrpc import Faults

from sidecar_plugin.core.litellm_yaml import config_version
from sidecar_plugin.core.render import RenderOptions
from sidecar_plugin.errors import SidecarError, SidecarStartError
from sidecar_plugin.names import LITELLM_YAML, LIVE_STATES, RECORD_NAME, SIDECAR_CONF
from sidecar_plugin.shell import control
from sidecar_plugin.shell.build import Rendered, write
from sidecar_plugin.shell.files import Snapshot, restore, snapshot
from sidecar_plugin.shell.statefile import state_dict
from sidecar_plugin.shell.supervisor import fault_words, tolerate, unreachable

# supervisord states of a sidecar that was meant to run before apply (BACKOFF: still trying)
WAS_LIVE = LIVE_STATES + ("BACKOFF",)


class ApplyError(SidecarError):
    """The new configuration did not come up; ``rolled_back`` says whether the old one is back."""

    def __init__(self, message: str, log_tail: Sequence[str] = (), rolled_back: bool = False) -> None:
        super().__init__(message)
        self.log_tail = tuple(log_tail)
        self.rolled_back = rolled_back


@dataclass
class Outcome:
    """What apply did, for the operator and for configuration-management tools."""

    changed: bool = False
    files: List[Tuple[str, bool]] = field(default_factory=list)
    restarted: List[str] = field(default_factory=list)
    running: List[Dict[str, Any]] = field(default_factory=list)


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


class Applier:
    """One apply run against one supervisord (any XML-RPC proxy to it: unix socket or http)."""

    def __init__(self, rendered: Rendered, rpc: Any, timeout: float, say: Callable[[str], None]) -> None:
        self.rendered = rendered
        self.rpc = rpc
        self.timeout = timeout
        self.say = say
        self.updated: Set[str] = set()

    # -- supervisord --
    def _update(self, ours: Set[str]) -> Set[str]:
        """Replace our groups supervisord's config says changed; return the groups added or re-added."""
        added, changed, removed = self.rpc.supervisor.reloadConfig()[0]
        sup = self.rpc.supervisor
        for name in sorted(set(removed) & ours):
            self._stop_group(name)
            sup.removeProcessGroup(name)
            self.say(f"supervisord: removed {name}")
        fresh = set()
        for name in sorted(set(changed) & ours):
            self._stop_group(name)
            sup.removeProcessGroup(name)
            sup.addProcessGroup(name)
            fresh.add(name)
            self.say(f"supervisord: updated {name}")
        for name in sorted(set(added) & ours):
            sup.addProcessGroup(name)
            fresh.add(name)
            self.say(f"supervisord: added {name}")
        return fresh

    def _stop_group(self, name: str) -> None:
        tolerate(lambda: self.rpc.supervisor.stopProcessGroup(name, True), (Faults.BAD_NAME,))

    def _restart(self, s: RenderOptions, fresh_groups: Set[str]) -> None:
        name = s.process_name
        if s.group_name not in fresh_groups:
            tolerate(lambda: self.rpc.supervisor.stopProcess(name, True), (Faults.NOT_RUNNING,))
        try:
            tolerate(lambda: self.rpc.supervisor.startProcess(name, False), (Faults.ALREADY_STARTED,))
        except xmlrpc.client.Fault as exc:
            raise SidecarStartError(f"supervisord could not start {fault_words(exc, name)}") from None

    # -- the run --
    def converge(self, changed_configs: Set[str], was_live: Dict[str, str], ours: Set[str]) -> List[str]:
        """Update supervisord, restart what changed, wait for running; return the programs restarted."""
        requested = time.time()
        fresh_groups = self._update(ours)
        self.updated |= fresh_groups
        live = live_processes(self.rpc)
        missing = [s.program for s in self.rendered.sidecars if s.process_name not in live]
        if missing:
            raise SidecarError(f"supervisord does not know {', '.join(missing)}: add "
                               f"{os.path.join(self.rendered.out_dir, SIDECAR_CONF)} to the files of its [include]")
        restarted = []
        for s in self.rendered.sidecars:
            touched = s.group_name in fresh_groups or s.config_path in changed_configs
            if touched and (s.autostart or was_live.get(s.process_name) in WAS_LIVE):
                self._restart(s, fresh_groups)
                restarted.append(s.program)
        for s in self.rendered.sidecars:
            if s.program in restarted:
                control.wait_started(lambda s=s: state_dict(s.state_file), requested, self.timeout, fresh=True)
        return restarted


def apply(rendered: Rendered, rpc: Any, timeout: float, say: Callable[[str], None], url: str = "") -> Outcome:
    """Write, update supervisord, restart what changed and wait; roll back when it does not come up."""
    try:
        rpc.supervisor.getState()
    except (OSError, xmlrpc.client.Error) as exc:
        raise SidecarError(f"{unreachable(url, exc)}; nothing was written") from None
    paths = [f.path for f in rendered.files]
    snap = snapshot(paths)
    ours = our_groups(rendered, snap)
    changed_configs = {f.path for f in rendered.files
                       if f.path.endswith(LITELLM_YAML) and (snap[f.path] is None or snap[f.path][0] != f.data)}
    changed_configs |= drifted(rendered)
    was_live = _safe_live(rpc)
    applier = Applier(rendered, rpc, timeout, say)
    outcome = Outcome(files=write(rendered))
    for path, changed in outcome.files:
        say(f"{'changed' if changed else 'unchanged':<9} {path}")
    try:
        outcome.restarted = applier.converge(changed_configs, was_live, ours)
    except (SidecarError, xmlrpc.client.Error, OSError) as exc:
        tail = getattr(exc, "log_tail", ())
        reason = getattr(exc, "reason", None) or str(exc).splitlines()[0]
        say(f"the new configuration did not come up ({reason}): rolling back")
        restore(snap)
        try:
            applier.converge(changed_configs, was_live, ours)
        except (SidecarError, xmlrpc.client.Error, OSError) as again:
            raise ApplyError(f"{reason}; the rollback failed too: {str(again).splitlines()[0]}", tail) from None
        raise ApplyError(f"{reason}; rolled back to the previous configuration", tail, rolled_back=True) from None
    outcome.changed = any(c for _, c in outcome.files) or bool(outcome.restarted) or bool(applier.updated)
    outcome.running = [state_dict(s.state_file) for s in rendered.sidecars if s.program in outcome.restarted]
    return outcome


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


def live_processes(rpc: Any) -> Dict[str, str]:
    """Map ``group:name`` -> statename of every process supervisord has."""
    return {f"{i['group']}:{i['name']}": i["statename"] for i in rpc.supervisor.getAllProcessInfo()}


def _safe_live(rpc: Any) -> Dict[str, str]:
    try:
        return live_processes(rpc)
    except (OSError, xmlrpc.client.Error):
        return {}
