"""From the operator's render options to every file of one render, in memory.

``render`` and ``apply`` share this: both need every file's bytes before
anything is written (``apply`` compares them with what is on disk to decide
whether anything changed, and keeps the old bytes to roll back to). This is
the shell around ``core.render.layout`` and ``core.render.files``: it reads what they must
not (profiles and folders, the environment, the LiteLLM binary on PATH, the
saved master key, the previous render's record, the user database). What an
earlier render left in the out-dir is read by ``shell.render.previous``; where
LiteLLM and this package's CLI are installed is found by ``shell.render.executables``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from sidecar_plugin.core.options.declared import PLAN, RENDER, copied, default, fields_of
from sidecar_plugin.core.options.remember import blamed
from sidecar_plugin.core.profiles.profile import ProfileError, load_profile
from sidecar_plugin.core.render import ini
from sidecar_plugin.core.render.layout import plan
from sidecar_plugin.core.render.files import Plan, render_files
from sidecar_plugin.core.render.options import RenderError, RenderOptions, RenderedFile
from sidecar_plugin.errors import BinaryNotFoundError
from sidecar_plugin.names import (
    DEFAULT_PORT, DEFAULT_PROGRAM, GROUP,
    LISTENER_LOG_NAME, LOG_NAME, PROFILE_EXTENSIONS, RUN_DIR, STATE_NAME,
)
from sidecar_plugin.shell.render.executables import (
    listener_entry_point, litellm_launcher, resolve_binary, shim_target,
)
from sidecar_plugin.shell.render.plugin_host import binary_note, plugin_host
from sidecar_plugin.shell.render.installed import without_prometheus
from sidecar_plugin.shell.render.previous import choose_master_key, previous_ports, previous_record
from sidecar_plugin.shell.render import filewrite, precheck


@fields_of(RENDER)
@dataclass(frozen=True)
class RenderRequest:
    """What the operator asked ``render`` or ``apply`` for (their shared options)."""

    profiles: Sequence[str]
    out_dir: str
    remember: Tuple[Tuple[str, Any], ...] = ()  # the options to record in sidecar.json (core.options.remember)
    kept: Tuple[Tuple[str, Any, str], ...] = ()  # (option, value, where) of those kept, not given now
    # every option of render and apply (core.options.declared)
    port: Optional[int] = default("--port")
    host: str = default("--host")
    program: Optional[str] = default("--program")
    binary: str = default("--binary")
    supervisord: Optional[str] = default("--supervisord")
    workers: int = default("--workers")
    api_key_env: str = default("--api-key-env")
    master_key_env: str = default("--master-key-env")
    health_timeout: float = default("--health-timeout")
    stop_timeout: int = default("--stop-timeout")
    retry_delay: float = default("--retry-delay")
    retry_max_delay: float = default("--retry-max-delay")
    retry_reset_after: float = default("--retry-reset-after")
    hang_window: float = default("--hang-window")
    memory_budget: Optional[int] = default("--memory-budget")
    memory_every: float = default("--memory-every")
    max_requests: Optional[int] = default("--max-requests")
    max_requests_jitter: Optional[int] = default("--max-requests-jitter")
    state_file: Optional[str] = default("--state-file")
    log_file: Optional[str] = default("--log-file")
    no_autostart: bool = default("--no-autostart")
    no_traffic_metrics: bool = default("--no-traffic-metrics")
    user: str = default("--user")
    metrics_file: Optional[str] = default("--metrics-file")


@dataclass(frozen=True)
class Rendered:
    """Every file of one render, the plan they came from, and who must own them."""

    plan: Plan
    files: Tuple[RenderedFile, ...]
    owner: Optional[Tuple[int, int]] = None
    notes: Tuple[str, ...] = ()  # render's own lines for the operator (traffic metrics left off)

    @property
    def out_dir(self) -> str:
        return self.plan.out_dir

    @property
    def sidecars(self) -> Tuple[RenderOptions, ...]:
        return self.plan.options

    @property
    def listener(self) -> str:
        return self.plan.listener

    @property
    def warnings(self) -> Tuple[str, ...]:
        """The profiles' warning lines (a key that looks like a typo), render's notes, and the ports supervisord
        will not hold (one line a reason), for the face to print."""
        lines = [w for p, _ in self.plan.sidecars for w in p.warnings] + list(self.notes)
        reasons: Dict[str, List[str]] = {}
        for s in self.sidecars:
            if s.not_held:
                reasons.setdefault(s.not_held, []).append(str(s.port))
        for why, ports in reasons.items():
            lines.append(f"{'ports' if len(ports) > 1 else 'port'} {', '.join(ports)} not held by supervisord "
                         f"(connections are refused while LiteLLM restarts): {why}")
        return tuple(lines)


def expand_profiles(paths: Sequence[str]) -> Tuple[List[str], bool]:
    """Return the profile files named (folders opened, sorted) and whether they make a fleet."""
    files: List[str] = []
    grouped = len(paths) > 1
    for path in paths:
        path = os.path.abspath(path)
        if os.path.isdir(path):
            grouped = True
            found = sorted(os.path.join(path, n) for n in os.listdir(path)
                           if n.endswith(PROFILE_EXTENSIONS) and not n.startswith("."))
            if not found:
                raise ProfileError(f"{path}: no profile in this folder (*.yaml, *.yml or *.json)")
            files.extend(found)
        else:
            files.append(path)
    return files, grouped


def common_options(req: RenderRequest, out_dir: str) -> RenderOptions:
    """Return the options every sidecar of the render shares (a single one takes them as they are)."""
    return RenderOptions(
        out_dir=out_dir, binary="", listener_command=listener_entry_point(),
        port=req.port if req.port is not None else DEFAULT_PORT, program=req.program or DEFAULT_PROGRAM,
        state_file=os.path.abspath(req.state_file or (os.path.join(out_dir, RUN_DIR, STATE_NAME) if req.user
                                                      else os.path.join(out_dir, STATE_NAME))),
        log_file=os.path.abspath(req.log_file or os.path.join(out_dir, LOG_NAME)),
        listener_log_file=os.path.join(out_dir, LISTENER_LOG_NAME), autostart=not req.no_autostart,
        metrics_file=os.path.abspath(req.metrics_file) if req.metrics_file else "", **copied(req, PLAN),
    )


def build(req: RenderRequest, env: Mapping[str, str], live_note: str = "") -> Rendered:
    """Load, validate and render everything in memory; raise a one-line error on bad input.

    An error about an option kept from an earlier render (not given now) says
    so, and how to forget it (``core.options.remember.blamed``). ``live_note``:
    why the running supervisord cannot hold the port now (apply asks it).
    """
    try:
        return _build(req, env, live_note)
    except (RenderError, BinaryNotFoundError) as exc:  # a --binary kept from an earlier render may be gone
        exc.args = (blamed(str(exc), req.kept),)
        raise


def _build(req: RenderRequest, env: Mapping[str, str], live_note: str = "") -> Rendered:
    paths, grouped = expand_profiles(req.profiles)
    for path in paths:
        _check_text(path, "--profile")
    profiles = [load_profile(f) for f in paths]
    out_dir = os.path.abspath(req.out_dir)
    if grouped:
        for flag, value in (("--program", req.program), ("--state-file", req.state_file), ("--log-file", req.log_file)):
            if value:
                raise RenderError(f"{flag}: names one sidecar; with several profiles each is {GROUP}-NAME "
                                  f"with its files in OUT_DIR/{GROUP}-NAME/")
    common = common_options(req, out_dir)
    ports = previous_ports(previous_record(out_dir))
    checked = plan(profiles, common, grouped, req.port, ports)  # every option, before the environment
    owner = lookup_user(req.user) if req.user else None
    if owner is not None and os.geteuid() != 0 and owner[0] != os.geteuid():
        raise RenderError(f"--user {req.user}: render as root (or as {req.user}) so the files can be given to it")
    _check_places(req, checked.options, owner)
    api_key = env.get(req.api_key_env, "")
    if not api_key:
        raise RenderError(f"{req.api_key_env} is not set: export the OpenRouter API key in it "
                          "(or name another variable with --api-key-env)")
    binary = resolve_binary(req.binary, extra_dirs=[os.path.dirname(os.path.abspath(sys.executable))])
    _check_text(binary, "--binary")
    binary = shim_target(binary) or binary  # a pyenv or asdf shim: the entry point it runs
    _check_text(binary, "--binary")
    launcher = litellm_launcher(binary)
    host = plugin_host(req.supervisord)
    notes = without_prometheus(launcher) if common.traffic_metrics else ()
    common = replace(common, binary=binary, launcher=launcher, plugin=host.loads,
                     bootstrap=os.path.abspath(sys.executable) if launcher else "",
                     port_note=binary_note(binary, launcher) or host.note or live_note,
                     no_traffic_metrics=common.no_traffic_metrics or bool(notes))
    the_plan = plan(profiles, common, grouped, req.port, ports)
    master_key, keep_file = choose_master_key(env, req.master_key_env, out_dir)
    files = render_files(the_plan, api_key, master_key, keep_file, dict(req.remember))
    return Rendered(the_plan, tuple(files), owner, notes)


def lookup_user(name: str) -> Tuple[int, int]:
    """Return (uid, gid) of ``name``, or raise RenderError."""
    import pwd

    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        raise RenderError(f"--user: no such user {name!r}") from None
    return pw.pw_uid, pw.pw_gid


def write(rendered: Rendered) -> List[Tuple[str, bool]]:
    """Write what changed (atomically, never through a link), create the folders and the owner-only logs."""
    try:
        return filewrite.write(rendered)
    except OSError as exc:
        raise RenderError(f"{exc.filename or rendered.out_dir}: {exc.strerror or exc}") from None


def _check_text(value: str, flag: str) -> None:
    try:
        ini.check_text(value, flag)
    except ini.IniError as exc:
        raise RenderError(str(exc)) from None


def _check_places(req: RenderRequest, sidecars: Sequence[RenderOptions], owner: Optional[Tuple[int, int]]) -> None:
    """Check every place a file goes before anything is written (folders exist, the user can write its own)."""
    if owner is not None:
        precheck.check_user(req.user, *owner)
        if owner[0] != os.geteuid():  # rendering as the user itself crosses no privilege boundary
            precheck.check_out_dir(req.out_dir, owner[0], req.user, owner[1])
    uid, gid = owner if owner is not None else (None, None)
    for s in sidecars:
        if req.log_file:
            precheck.check_folder("--log-file", s.log_file)
        if req.state_file:
            precheck.check_folder("--state-file", s.state_file, uid, gid, req.user)
    if req.metrics_file:
        precheck.check_folder("--metrics-file", req.metrics_file, uid, gid, req.user)
    precheck.check_distinct(req.out_dir, req.metrics_file, sidecars)
    places = [req.out_dir] + [s.out_dir for s in sidecars] + [s.log_file for s in sidecars]
    places += [s.listener_log_file for s in sidecars[:1]]
    if owner is not None:
        places += [os.path.join(s.out_dir, RUN_DIR) for s in sidecars]
    for path in places:
        precheck.check_no_link(path)
