"""``sidecar-plugin apply``: bring supervisord in line with the profiles, or put it back.

Configuration-management tools run it on every pass, so it converges and is
idempotent: it renders in memory, checks every changed ``litellm.yaml`` with
LiteLLM's own ``--validate_config`` before anything is written (a broken change
never reaches the live sidecar), writes only what changed, asks supervisord
(``reloadConfig``) which of *our* groups its include changed, replaces just
those (what ``supervisorctl update`` does, without touching anyone else's
programs: a changed port, host, worker count or binary needs this real restart,
and apply says so), and waits until each restarted sidecar is ``running``.

A change LiteLLM reads from ``litellm.yaml`` under an unchanged command
(supervisord cannot see inside it) is applied without dropping a request: with
several workers, ``SIGHUP`` makes uvicorn replace them one at a time, each new
worker (which reads the new file) serving before the old one retires and
finishes its requests; apply waits until the listener reports that every worker
runs the new version. One worker has nothing to serve meanwhile: it is restarted.

When a sidecar does not come up (or its new workers do not), the previous files
are restored and the same steps run again, so the host is back on the
configuration that worked, and the failure's log tail is reported.

supervisord replaces a whole group at a time: in a fleet (``[group:agentroute]``)
a changed command, or a sidecar added or removed, restarts every sidecar of
the group; a changed model list restarts only its own sidecar.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
import xmlrpc.client
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from supervisor.xmlrpc import Faults

from sidecar_plugin.core.litellm_yaml import config_version
from sidecar_plugin.core.render import RenderOptions, sidecar_command
from sidecar_plugin.errors import SidecarError, SidecarStartError
from sidecar_plugin.names import LITELLM_YAML, LIVE_STATES, RECORD_NAME, SIDECAR_CONF, STOP_MARGIN
from sidecar_plugin.shell import control
from sidecar_plugin.shell.build import Rendered, write
from sidecar_plugin.shell.files import Snapshot, file_version, restore, snapshot
from sidecar_plugin.shell.redact import Redactor, secrets_from_config
from sidecar_plugin.shell.statefile import state_dict
from sidecar_plugin.shell.supervisor import fault_words, tolerate, unreachable

# supervisord states of a sidecar that was meant to run before apply (BACKOFF: still trying)
WAS_LIVE = LIVE_STATES + ("BACKOFF",)
VALIDATE_TIMEOUT = 180.0  # LiteLLM imports itself to validate: about 10 s here, more on a loaded host
# The flags of LiteLLM's command line, as an operator names them when a restart is needed.
_FLAG_WORDS = {"--port": "port", "--host": "host", "--num_workers": "workers", "--config": "config path",
               "--timeout_worker_healthcheck": "worker health-check timeout"}


class ApplyError(SidecarError):
    """The new configuration did not come up; ``rolled_back`` says whether the old one is back."""

    def __init__(self, message: str, log_tail: Sequence[str] = (), rolled_back: bool = False) -> None:
        super().__init__(message)
        self.log_tail = tuple(log_tail)
        self.rolled_back = rolled_back


class ValidationError(SidecarError):
    """LiteLLM refused a new config; ``output`` holds the last lines it printed (redacted)."""

    def __init__(self, message: str, output: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.output = tuple(output)


@dataclass
class Outcome:
    """What apply did, for the operator and for configuration-management tools."""

    changed: bool = False
    files: List[Tuple[str, bool]] = field(default_factory=list)
    restarted: List[str] = field(default_factory=list)
    reloaded: List[str] = field(default_factory=list)
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

    def _reload(self, s: RenderOptions) -> None:
        """Replace the workers one at a time (SIGHUP) and wait until every one runs the file on disk.

        The listener follows the replacement (same main pid, workers born after
        the change) and records the version in the state file: that is the end.
        """
        wanted = file_version(s.config_path)
        requested = time.time()
        self.say(f"{s.program}: reloading {LITELLM_YAML} without a restart: uvicorn replaces its {s.workers} "
                 "workers one at a time (SIGHUP), each new one serving before the old one finishes its requests")
        self.rpc.supervisor.signalProcess(s.process_name, "HUP")
        # Each old worker may drain its streams for the whole drain window before it retires.
        limit = self.reload_timeout or s.workers * (s.health_timeout + s.stop_timeout + STOP_MARGIN)

        def step() -> Optional[bool]:
            doc = state_dict(s.state_file)
            if doc.get("state") == "crashed" and float(doc.get("since") or 0) >= requested:
                raise control.start_error(doc)
            if doc.get("state") == "running" and doc.get("config_version") == wanted:
                return True
            return None

        def late() -> Exception:
            return SidecarError(f"{s.program}: its new workers did not all come up within {limit:g} s "
                                "(the old ones keep serving)")

        control.poll(step, limit, late)
        self.reloaded.append(s.program)

    def _reloadable(self, s: RenderOptions, fresh_groups: Set[str]) -> bool:
        """A config change under the same command, several workers, running now: a rolling reload."""
        if s.group_name in fresh_groups or s.workers < 2:
            return False
        # supervisord may still say STARTING (startsecs) of a sidecar that already answers
        return live_processes(self.rpc).get(s.process_name) in ("STARTING", "RUNNING") and \
            state_dict(s.state_file).get("state") == "running"

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
            touched = s.group_name in fresh_groups or s.config_path in changed_configs
            if not (touched and (s.autostart or was_live.get(s.process_name) in WAS_LIVE)):
                continue
            if self._reloadable(s, fresh_groups):
                self._reload(s)
                continue
            if s.group_name in fresh_groups and s.program in self.why_restart:
                self.say(f"{s.program}: needs a restart ({self.why_restart[s.program]} changed): in-flight "
                         f"requests drain for up to {s.stop_timeout} s, new connections are refused until it runs")
            elif s.workers < 2 and s.group_name not in fresh_groups:
                self.say(f"{s.program}: runs one worker, so the change needs a restart (with --workers 2 or "
                         "more, apply replaces workers without dropping a request)")
            self._restart(s, fresh_groups)
            restarted.append(s.program)
        for s in self.rendered.sidecars:
            if s.program in restarted:
                control.wait_started(lambda s=s: state_dict(s.state_file), requested, self.timeout, fresh=True)
        return restarted


def apply(rendered: Rendered, rpc: Any, timeout: float, say: Callable[[str], None], url: str = "",
          reload_timeout: Optional[float] = None, validate: bool = True) -> Outcome:
    """Validate, write, update supervisord, reload or restart what changed and wait; roll back when it fails."""
    try:
        rpc.supervisor.getState()
    except (OSError, xmlrpc.client.Error) as exc:
        raise SidecarError(f"{unreachable(url, exc)}; nothing was written") from None
    paths = [f.path for f in rendered.files]
    snap = snapshot(paths)
    ours = our_groups(rendered, snap)
    new_configs = {f.path for f in rendered.files
                   if f.path.endswith(LITELLM_YAML) and (snap[f.path] is None or snap[f.path][0] != f.data)}
    if validate:
        try:
            validate_configs(rendered, new_configs, say)
        except ValidationError as exc:
            raise ApplyError(str(exc), exc.output, rolled_back=True) from None  # nothing changed
    changed_configs = new_configs | drifted(rendered)
    was_live = _safe_live(rpc)
    applier = Applier(rendered, rpc, timeout, say, reload_timeout, restart_reasons(rendered, snap))
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
    outcome.reloaded = list(applier.reloaded)
    done = set(outcome.restarted) | set(outcome.reloaded)
    outcome.changed = any(c for _, c in outcome.files) or bool(done) or bool(applier.updated)
    outcome.running = [state_dict(s.state_file) for s in rendered.sidecars if s.program in done]
    return outcome


def validate_configs(rendered: Rendered, paths: Set[str], say: Callable[[str], None]) -> None:
    """Check each new ``litellm.yaml`` with LiteLLM's ``--validate_config``, from a private temp copy.

    Offline (the model cost map is local) and without binding a port; a
    refusal stops apply before anything is written.
    """
    data = {f.path: f.data for f in rendered.files}
    for s in rendered.sidecars:
        if s.config_path not in paths:
            continue
        # beside the live file when its folder exists (a new sidecar's does not yet): the same filesystem
        # and permissions; else the system's temp folder (mkstemp: 0600, removed below)
        folder = next((d for d in (os.path.dirname(s.config_path), rendered.out_dir) if os.path.isdir(d)), None)
        fd, tmp = tempfile.mkstemp(prefix=".validate-", suffix=".yaml", dir=folder)
        try:
            with os.fdopen(fd, "wb") as fh:  # mkstemp: 0600, like the file it stands for
                fh.write(data[s.config_path])
            redact = Redactor(secrets_from_config(tmp))
            env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True")
            try:
                res = subprocess.run([s.binary, "--config", tmp, "--validate_config"], capture_output=True,
                                     text=True, timeout=VALIDATE_TIMEOUT, env=env, cwd=os.path.dirname(tmp),
                                     stdin=subprocess.DEVNULL)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise SidecarError(f"{s.program}: could not validate the new {LITELLM_YAML} "
                                   f"({type(exc).__name__}); nothing was written") from None
        finally:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        if res.returncode == 0:
            say(f"{s.program}: the new {LITELLM_YAML} passes litellm --validate_config")
            continue
        lines = [redact(line).strip() for line in (res.stderr + res.stdout).splitlines() if line.strip()]
        if any("No such option" in line and "validate_config" in line for line in lines):
            say(f"{s.program}: this LiteLLM has no --validate_config; the change is checked when it starts")
            continue
        why = next((line for line in lines if "validation failed" in line), lines[-1] if lines else "no output")
        raise ValidationError(f"{s.program}: litellm --validate_config refused the new {LITELLM_YAML} "
                           f"({why[:300]}); nothing was written", lines[-10:])


def recorded_commands(record: Optional[bytes]) -> Dict[str, List[str]]:
    """Map program -> LiteLLM argv, as the previous render's ``sidecar.json`` recorded them."""
    try:
        sidecars = json.loads(record or b"{}").get("sidecars") or {}
    except (ValueError, AttributeError, RecursionError):
        return {}
    return {str(p): [str(a) for a in v["command"]] for p, v in sidecars.items()
            if isinstance(v, dict) and isinstance(v.get("command"), list)}


def restart_reasons(rendered: Rendered, snap: Snapshot) -> Dict[str, str]:
    """Map program -> what in its command changed (port, host, workers, binary): those need a real restart."""
    old = snap.get(os.path.join(rendered.out_dir, RECORD_NAME))
    before = recorded_commands(old[0] if old else None)
    reasons = {}
    for s in rendered.sidecars:
        was, argv = before.get(s.program), sidecar_command(s)
        if was is None or was == argv:
            continue
        words = ["binary"] if was[:1] != argv[:1] else []
        flags = {a for a in was + argv if a.startswith("--")}
        for flag in sorted(flags):
            if _flag(was, flag) != _flag(argv, flag):
                words.append(_FLAG_WORDS.get(flag, flag))
        reasons[s.program] = ", ".join(words) or "command"
    return reasons


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


def live_processes(rpc: Any) -> Dict[str, str]:
    """Map ``group:name`` -> statename of every process supervisord has."""
    return {f"{i['group']}:{i['name']}": i["statename"] for i in rpc.supervisor.getAllProcessInfo()}


def _safe_live(rpc: Any) -> Dict[str, str]:
    try:
        return live_processes(rpc)
    except (OSError, xmlrpc.client.Error):
        return {}
