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

import os
import re
import time
import xmlrpc.client
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from sidecar_plugin import control, safefs
from sidecar_plugin.client import state_dict
from sidecar_plugin.errors import SidecarError, SidecarStartError
from sidecar_plugin.fleet import Rendered, write
from sidecar_plugin.render import LITELLM_YAML, RenderOptions, SIDECAR_CONF, config_version

LIVE = ("STARTING", "RUNNING", "BACKOFF")
_SECTION = re.compile(r"^\[(?:program|group|eventlistener):([^\]]+)\]", re.M)
Snapshot = Dict[str, Optional[Tuple[bytes, int, int, int]]]  # bytes, mode, uid, gid


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


def snapshot(paths: Sequence[str]) -> Snapshot:
    """Return each file's bytes, mode and owner (None: absent), to roll back to; never through a link."""
    snap: Snapshot = {}
    for path in paths:
        folder, name = os.path.split(os.path.abspath(path))
        try:
            dirfd = safefs.open_dir(folder)
        except FileNotFoundError:
            snap[path] = None
            continue
        try:
            data = safefs.read_file(dirfd, name, 16 << 20, shown=path)
            st = safefs.entry(dirfd, name)
        finally:
            os.close(dirfd)
        snap[path] = None if data is None or st is None else (data, st.st_mode & 0o777, st.st_uid, st.st_gid)
    return snap


def restore(snap: Snapshot) -> None:
    """Put every file of ``snap`` back as it was (atomically, owner and mode too); remove the ones that were absent."""
    for path, saved in snap.items():
        folder, name = os.path.split(os.path.abspath(path))
        dirfd = safefs.open_dir(folder)
        try:
            if saved is None:
                safefs.remove(dirfd, name)
            else:
                safefs.write_file(dirfd, name, saved[0], saved[1], (saved[2], saved[3]))
        finally:
            os.close(dirfd)


def our_groups(rendered: Rendered, snap: Snapshot) -> Set[str]:
    """The supervisord groups this include defines now or defined before: the only ones apply touches."""
    names = {s.group_name for s in rendered.sidecars} | {rendered.listener}
    old = snap.get(os.path.join(rendered.out_dir, SIDECAR_CONF))
    if old is not None:
        text = old[0].decode("utf-8", "replace")
        grouped = set(re.findall(r"^\[group:([^\]]+)\]", text, re.M))
        members = set(re.findall(r"^programs=(.*)$", text, re.M))
        in_group = {p.strip() for line in members for p in line.split(",")}
        names |= {n for n in _SECTION.findall(text) if n not in in_group} | grouped
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
        try:
            self.rpc.supervisor.stopProcessGroup(name, True)
        except xmlrpc.client.Fault as exc:
            if "BAD_NAME" not in exc.faultString:
                raise

    def _restart(self, s: RenderOptions, fresh_groups: Set[str]) -> None:
        name = s.process_name
        if s.group_name not in fresh_groups:
            try:
                self.rpc.supervisor.stopProcess(name, True)
            except xmlrpc.client.Fault as exc:
                if "NOT_RUNNING" not in exc.faultString:
                    raise
        try:
            self.rpc.supervisor.startProcess(name, False)
        except xmlrpc.client.Fault as exc:
            if "ALREADY_STARTED" not in exc.faultString:
                raise SidecarStartError(f"supervisord could not start {name}: {exc.faultString}") from None

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
            if touched and (s.autostart or was_live.get(s.process_name) in LIVE):
                self._restart(s, fresh_groups)
                restarted.append(s.program)
        for s in self.rendered.sidecars:
            if s.program in restarted:
                control.wait_started(lambda s=s: state_dict(s.state_file), requested, self.timeout, fresh=True)
        return restarted


def apply(rendered: Rendered, rpc: Any, timeout: float, say: Callable[[str], None]) -> Outcome:
    """Write, update supervisord, restart what changed and wait; roll back when it does not come up."""
    try:
        rpc.supervisor.getState()
    except (OSError, xmlrpc.client.Error) as exc:
        raise SidecarError(f"cannot reach supervisord ({exc}); nothing was written") from None
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
