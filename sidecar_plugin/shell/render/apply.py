"""``sidecar-plugin apply``: bring supervisord in line with the profiles, or put it back.

Configuration-management tools run it on every pass, so it converges and is
idempotent: it renders in memory, checks every changed ``litellm.yaml`` with
LiteLLM's own ``--validate_config`` before anything is written (a broken change
never reaches the live sidecar), writes only what changed, asks supervisord
(``reloadConfig``) which of *our* groups its include changed, replaces just
those (what ``supervisorctl update`` does, without touching anyone else's
programs: a changed port or host needs this real restart, and apply says so),
and waits until each restarted sidecar is ``running``.

A change of ``litellm.yaml`` alone is a rolling reload (``shell.render.reload``); one of ``launch.json``
(workers, binary, launcher flags) or a LiteLLM installed anew since the sidecar started (``shell.render.installed``)
replaces the tree in place (``shell.render.relaunch``). Both need two workers; one is restarted.

When a sidecar does not come up (or its new workers do not), the previous files
are restored and the same steps run again, so the host is back on the
configuration that worked, and the failure's log tail is reported.

supervisord replaces a whole group at a time: in a fleet (``[group:agentroute]``)
a changed command, or a sidecar added or removed, restarts every sidecar of
the group; a changed model list restarts only its own sidecar.

``shell.render.validate`` checks configs; ``shell.render.changes`` says which groups are ours, what drifted, why.
"""

from __future__ import annotations

import os
import time
import xmlrpc.client
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Dict, List, NoReturn, Optional, Sequence, Set, Tuple

from supervisor.xmlrpc import Faults

from sidecar_plugin.core.render.options import RenderOptions
from sidecar_plugin.errors import SidecarError, SidecarStartError
from sidecar_plugin.names import LITELLM_YAML, LIVE_STATES, SIDECAR_CONF, State
from sidecar_plugin.shell.supervisord import control
from sidecar_plugin.shell.render.build import Rendered, write
from sidecar_plugin.shell.render.changes import drifted, keeps_accepting, our_groups, restart_reasons
from sidecar_plugin.shell.files.rendered import Snapshot, restore, snapshot
from sidecar_plugin.shell.render.installed import reinstalled
from sidecar_plugin.shell.render.relaunch import replace_in_place, stale
from sidecar_plugin.shell.render.reload import reloadable, rolling_reload
from sidecar_plugin.shell.render.settle import wait_settled
from sidecar_plugin.shell.files.statefile import state_dict
from sidecar_plugin.shell.supervisord.supervisor import fault_words, live_processes, tolerate, unreachable
from sidecar_plugin.shell.render.validate import ValidationError, validate_configs

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
    reloaded: List[str] = field(default_factory=list)
    running: List[Dict[str, Any]] = field(default_factory=list)
    states: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # program -> its state once settled

    @property
    def down(self) -> List[str]:
        """The sidecars meant to run that do not: neither running nor stopped by an operator."""
        return [p for p, doc in self.states.items() if doc.get("state") not in (State.RUNNING, State.STOPPED)]


class Applier:
    """One apply run against one supervisord (any XML-RPC proxy to it: unix socket or http)."""

    def __init__(self, rendered: Rendered, rpc: Any, timeout: float, say: Callable[[str], None],
                 reload_timeout: Optional[float] = None, why_restart: Optional[Dict[str, str]] = None) -> None:
        self.rendered = rendered
        self.rpc = rpc
        self.timeout = timeout
        self.reload_timeout = reload_timeout
        self.say = say
        self.updated: Set[str] = set()
        self.reloaded: List[str] = []
        self.why_restart = why_restart or {}
        self.keeps_accepting: Set[str] = set()  # programs whose port stays open through a restart
        self.reinstalled: Dict[str, str] = {}  # program -> why its live LiteLLM is older than its install
        self.skip: Set[str] = set()  # a rollback's: down on a LiteLLM installed since it started, not apply's to undo

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

    def _say_restart(self, s: RenderOptions, fresh_groups: Set[str]) -> None:
        """Say, before it happens, why a sidecar restarts and what its clients see meanwhile."""
        why = (f"{self.why_restart[s.program]} changed" if s.program in self.why_restart
               else self.reinstalled.get(s.program))
        if why:
            cost = "wait in the port's queue" if s.program in self.keeps_accepting else "are refused"
            self.say(f"{s.program}: needs a restart ({why}): in-flight "
                     f"requests drain for up to {s.stop_timeout} s, new connections {cost} until it runs")
        elif s.workers < 2 and s.group_name not in fresh_groups:
            self.say(f"{s.program}: runs one worker, so the change needs a restart (with --workers 2 or "
                     "more, apply replaces workers without dropping a request)")

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
        """Update supervisord, reload or restart what changed, wait for running; return the programs restarted."""
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
            if s.program in self.skip:
                continue
            new_code = s.program in self.reinstalled
            relaunch = s.group_name not in fresh_groups and (s.program in self.why_restart or new_code)
            touched = s.group_name in fresh_groups or s.config_path in changed_configs or relaunch
            if not (touched and (s.autostart or was_live.get(s.process_name) in WAS_LIVE)):
                continue
            why = self.reinstalled.get(s.program) or f"{self.why_restart.get(s.program)} changed"
            if relaunch and replace_in_place(self.rpc, s, why, self.timeout, s.config_path in changed_configs,
                                             self.say):
                self.reloaded.append(s.program)
                continue
            if not relaunch and reloadable(self.rpc, s, fresh_groups):
                rolling_reload(self.rpc, s, self.reload_timeout, self.say)
                self.reloaded.append(s.program)
                continue
            self._say_restart(s, fresh_groups)
            self._restart(s, fresh_groups)
            restarted.append(s.program)
        for s in self.rendered.sidecars:
            if s.program in restarted:
                control.wait_started(partial(state_dict, s.state_file), requested, self.timeout, fresh=True)
        return restarted

    def roll_back(self, exc: BaseException, snap: Snapshot, changed_configs: Set[str], was_live: Dict[str, str],
                  ours: Set[str]) -> NoReturn:
        """Put the previous files back and converge on them; raise ApplyError saying whether that worked."""
        tail = getattr(exc, "log_tail", ())
        reason = getattr(exc, "reason", None) or str(exc).splitlines()[0]
        self.say(f"the new configuration did not come up ({reason}): rolling back")
        restore(snap)
        # a LiteLLM installed anew is not apply's to put back: a sidecar down on it would fail again, whatever
        # else the rollback restores (the listener's retries start it on the restored files)
        new_code, self.reinstalled = self.reinstalled, {}
        stuck = [s.program for s in self.rendered.sidecars if s.program in new_code and (getattr(exc, "program", "")
                 == s.program or state_dict(s.state_file).get("state") != State.RUNNING)]
        self.skip = set(stuck)
        try:
            self.converge(changed_configs, was_live, ours)
        except (SidecarError, xmlrpc.client.Error, OSError) as again:
            raise ApplyError(f"{reason}; the rollback failed too: {str(again).splitlines()[0]}", tail) from None
        if stuck:
            raise ApplyError(f"{reason}; the files are rolled back, but {', '.join(stuck)} cannot be: it runs the "
                             f"{new_code[stuck[0]]}, which does not come up (put the previous LiteLLM back, "
                             "then run apply again)", tail) from None
        raise ApplyError(f"{reason}; rolled back to the previous configuration", tail, rolled_back=True) from None


def apply(rendered: Rendered, rpc: Any, timeout: float, say: Callable[[str], None], url: str = "",
          reload_timeout: Optional[float] = None, validate: bool = True, before_write: Sequence[str] = ()) -> Outcome:
    """Validate, write, update supervisord, reload or restart what changed and wait; roll back when it fails.

    ``before_write``: lines to say once the checks passed, just before the files are written.
    """
    try:
        rpc.supervisor.getState()
    except (OSError, xmlrpc.client.Error) as exc:
        raise SidecarError(f"{unreachable(url, exc)}; nothing was written") from None
    paths = [f.path for f in rendered.files]
    snap = snapshot(paths)
    ours = our_groups(rendered, snap)
    new_configs = {f.path for f in rendered.files
                   if f.path.endswith(LITELLM_YAML) and ((old := snap[f.path]) is None or old[0] != f.data)}
    new_code = reinstalled(rendered.sidecars, say)
    if validate:
        _validate(rendered, new_configs, say, new_code)
    changed_configs = new_configs | drifted(rendered)
    was_live = _safe_live(rpc)
    applier = Applier(rendered, rpc, timeout, say, reload_timeout, {**stale(rendered.sidecars),
                                                                    **restart_reasons(rendered, snap)})
    applier.keeps_accepting = keeps_accepting(rendered, snap)
    applier.reinstalled = new_code
    for line in before_write:
        say(line)
    outcome = Outcome(files=write(rendered))
    for path, changed in outcome.files:
        say(f"{'changed' if changed else 'unchanged':<9} {path}")
    try:
        outcome.restarted = applier.converge(changed_configs, was_live, ours)
    except (SidecarError, xmlrpc.client.Error, OSError) as exc:
        applier.roll_back(exc, snap, changed_configs, was_live, ours)
    outcome.reloaded = list(applier.reloaded)
    done = set(outcome.restarted) | set(outcome.reloaded)
    outcome.changed = any(c for _, c in outcome.files) or bool(done) or bool(applier.updated)
    outcome.running = [state_dict(s.state_file) for s in rendered.sidecars if s.program in done]
    outcome.states = wait_settled(rendered, rpc, timeout)  # converged is not up: say what each sidecar does
    return outcome


def _validate(rendered: Rendered, new_configs: Set[str], say: Callable[[str], None], new_code: Dict[str, str]) -> None:
    """LiteLLM's check of each new config, and of each config under a LiteLLM installed since its sidecar started."""
    try:
        validate_configs(rendered, new_configs, say, new_code)
    except ValidationError as exc:
        raise ApplyError(str(exc), exc.output, rolled_back=True) from None  # nothing changed


def _safe_live(rpc: Any) -> Dict[str, str]:
    try:
        return live_processes(rpc)
    except (OSError, xmlrpc.client.Error):
        return {}
