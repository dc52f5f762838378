"""From the operator's render options to the files of one sidecar or of several.

``render`` and ``apply`` share this: both need every file's bytes before
anything is written (``apply`` compares them with what is on disk to decide
whether anything changed, and keeps the old bytes to roll back to).

One profile keeps the contract's layout: ``DIR/litellm.yaml``, a program
named by ``--program`` and its own listener. Several profiles (several
``--profile`` options, or a folder of profiles) become a fleet: each profile
``NAME`` is the program ``agentroute-NAME`` with its files in ``DIR/agentroute-NAME/``
(config, state, log), all in one supervisord ``[group:agentroute]``, watched by
one listener ``agentroute-health``. The master key is one per host
(``DIR/master.key``): the gateway holds one key for all its sidecars.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, replace
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from sidecar_plugin import filewrite, ini
from sidecar_plugin.filewrite import RUN_DIR
from sidecar_plugin.profile import Profile, ProfileError, load_profile
from sidecar_plugin.render import (
    DEFAULT_PORT, LISTENER_SUFFIX, LITELLM_YAML, SIDECAR_CONF, RenderedFile, RenderError, RenderOptions,
    check_options, choose_master_key, listener_entry_point, lookup_user, master_key_file, metrics_argv, num_arg,
    optional_port, read_beside, render_files, render_group_conf, render_litellm_yaml, resolve_binary,
)

GROUP = "agentroute"
PROFILE_EXTENSIONS = (".yaml", ".yml", ".json")
STATE_NAME = "state.json"
LOG_NAME = "litellm.log"
LISTENER_LOG_NAME = "listener.log"


@dataclass(frozen=True)
class RenderRequest:
    """What the operator asked ``render`` or ``apply`` for (their shared options)."""

    profiles: Sequence[str]
    out_dir: str
    port: Optional[int] = None
    host: str = "127.0.0.1"
    program: Optional[str] = None
    binary: str = "litellm"
    workers: int = 1
    api_key_env: str = "OPENROUTER_API_KEY"
    master_key_env: str = "AGENTROUTE_MASTER_KEY"
    health_timeout: float = 20.0
    stop_timeout: int = 10
    state_file: Optional[str] = None
    log_file: Optional[str] = None
    no_autostart: bool = False
    user: str = ""
    metrics_file: Optional[str] = None


@dataclass(frozen=True)
class Rendered:
    """Every file of one render, and what each sidecar is called and where it lives."""

    out_dir: str
    files: Tuple[RenderedFile, ...]
    sidecars: Tuple[RenderOptions, ...]
    listener: str
    owner: Optional[Tuple[int, int]] = None


def sidecar_dir(root: str, program: str) -> str:
    """Return where a fleet sidecar's config, state and log live (render and listener agree here)."""
    return os.path.join(root, program)


def fleet_paths(root: str, program: str, state_subdir: str = "") -> Dict[str, str]:
    """Return the config, state file and log file of a fleet sidecar (state in ``state_subdir`` under --user)."""
    folder = sidecar_dir(root, program)
    return {"config": os.path.join(folder, LITELLM_YAML),
            "state-file": os.path.join(folder, state_subdir, STATE_NAME) if state_subdir
            else os.path.join(folder, STATE_NAME),
            "log-file": os.path.join(folder, LOG_NAME)}


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


def assign_ports(profiles: Sequence[Profile], base: int, previous: Mapping[str, int] = {}) -> Dict[str, int]:
    """Give each profile its own port: its ``port``, else the one it had, else the next free from ``base``.

    "Free" means not claimed by another profile of the fleet, not "nobody
    listens there now": the running sidecars hold their own ports, and the
    same inputs must render the same files. A sidecar keeps the port of the
    previous render (``previous``: program name -> port), so adding a profile
    never moves the port of one the gateway already uses.
    """
    ports: Dict[str, int] = {}
    owner: Dict[int, str] = {}
    for p in profiles:
        if p.port is not None:
            if p.port in owner:
                raise ProfileError(f"{p.source}: port: {p.port} is also the port of profile {owner[p.port]!r}")
            owner[p.port] = p.name
            ports[p.name] = p.port
    for p in profiles:
        kept = previous.get(f"{GROUP}-{p.name}")
        if p.name not in ports and kept is not None and kept not in owner:
            owner[kept] = p.name
            ports[p.name] = kept
    nxt = base
    for p in profiles:
        if p.name in ports:
            continue
        while nxt in owner:
            nxt += 1
        if nxt > 65535:
            raise RenderError(f"--port: no port left from {base} for profile {p.name!r}")
        owner[nxt] = p.name
        ports[p.name] = nxt
    return ports


def build(req: RenderRequest, env: Mapping[str, str]) -> Rendered:
    """Load, validate and render everything in memory; raise a one-line error on bad input."""
    files, grouped = expand_profiles(req.profiles)
    for f in files:
        _check_text(f, "--profile")
    profiles = [load_profile(f) for f in files]
    out_dir = os.path.abspath(req.out_dir)
    default_state = (os.path.join(out_dir, RUN_DIR, STATE_NAME) if req.user else os.path.join(out_dir, STATE_NAME))
    base = RenderOptions(
        out_dir=out_dir, binary="", listener_command=listener_entry_point(),
        port=req.port if req.port is not None else DEFAULT_PORT, host=req.host,
        program=req.program or "agentroute-sidecar", workers=req.workers,
        health_timeout=req.health_timeout, stop_timeout=req.stop_timeout,
        state_file=os.path.abspath(req.state_file or default_state),
        log_file=os.path.abspath(req.log_file or os.path.join(out_dir, LOG_NAME)),
        listener_log_file=os.path.join(out_dir, LISTENER_LOG_NAME),
        autostart=not req.no_autostart, user=req.user,
        metrics_file=os.path.abspath(req.metrics_file) if req.metrics_file else "",
    )
    if grouped:
        for flag, value in (("--program", req.program), ("--state-file", req.state_file), ("--log-file", req.log_file)):
            if value:
                raise RenderError(f"{flag}: names one sidecar; with several profiles each is {GROUP}-NAME "
                                  f"with its files in OUT_DIR/{GROUP}-NAME/")
    sidecars = _fleet(profiles, base) if grouped else [(profiles[0], replace(base, port=optional_port(profiles[0], req.port)))]
    for _, opts in sidecars:
        check_options(opts)
    owner = lookup_user(req.user) if req.user else None
    if owner is not None and os.geteuid() != 0 and owner[0] != os.geteuid():
        raise RenderError(f"--user {req.user}: render as root (or as {req.user}) so the files can be given to it")
    _check_places(req, [o for _, o in sidecars], owner)
    api_key = env.get(req.api_key_env, "")
    if not api_key:
        raise RenderError(f"{req.api_key_env} is not set: export the OpenRouter API key in it "
                          "(or name another variable with --api-key-env)")
    binary = resolve_binary(req.binary, extra_dirs=[os.path.dirname(os.path.abspath(sys.executable))])
    try:
        ini.raw(binary, "--binary")
    except ini.IniError as exc:
        raise RenderError(str(exc)) from None
    sidecars = [(p, replace(o, binary=binary)) for p, o in sidecars]
    master_key, keep_file = choose_master_key(env, req.master_key_env, out_dir)
    if not grouped:
        profile, opts = sidecars[0]
        rendered = render_files(profile, opts, api_key, master_key, keep_file)
        return Rendered(out_dir, tuple(rendered), (opts,), f"{opts.program}{LISTENER_SUFFIX}", owner)
    out: List[RenderedFile] = [RenderedFile(o.config_path, render_litellm_yaml(p, api_key, master_key), 0o600)
                               for p, o in sidecars]
    if keep_file:
        out.append(master_key_file(out_dir, master_key))
    listener = group_listener_argv(out_dir, [o for _, o in sidecars], base)
    out.append(RenderedFile(os.path.join(out_dir, SIDECAR_CONF), render_group_conf(sidecars, GROUP, listener, base), 0o644))
    return Rendered(out_dir, tuple(out), tuple(o for _, o in sidecars), GROUP + LISTENER_SUFFIX, owner)


def _fleet(profiles: Sequence[Profile], base: RenderOptions) -> List[Tuple[Profile, RenderOptions]]:
    seen: Dict[str, str] = {}
    for p in profiles:
        if p.name in seen:
            raise ProfileError(f"{p.source}: name: {p.name!r} is also the name of {seen[p.name]}")
        seen[p.name] = p.source
        if GROUP + "-" + p.name == GROUP + LISTENER_SUFFIX:
            raise ProfileError(f"{p.source}: name: {p.name!r} is taken by the fleet's listener ({GROUP}{LISTENER_SUFFIX})")
    ports = assign_ports(profiles, base.port, previous_ports(base.out_dir))
    result = []
    for p in sorted(profiles, key=lambda q: q.name):
        program = f"{GROUP}-{p.name}"
        paths = fleet_paths(base.out_dir, program, RUN_DIR if base.user else "")
        result.append((p, replace(base, out_dir=sidecar_dir(base.out_dir, program), program=program, group=GROUP,
                                  port=ports[p.name], state_file=paths["state-file"], log_file=paths["log-file"])))
    return result


def previous_ports(out_dir: str) -> Dict[str, int]:
    """Return program -> port of the fleet rendered in ``out_dir`` before (empty when none)."""
    try:
        text = read_beside(out_dir, SIDECAR_CONF, 1 << 20).decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"--sidecar ([^\s=]+)=(\d+)", text)}


def group_listener_argv(root: str, sidecars: Sequence[RenderOptions], common: RenderOptions) -> List[str]:
    """Return the one listener's command for a fleet: each sidecar as ``--sidecar PROGRAM=PORT``."""
    argv = list(common.listener_command) + ["listen", "--group", GROUP, "--root", root, "--host", common.host]
    if common.user:
        argv += ["--state-subdir", RUN_DIR]
    for opts in sidecars:
        argv += ["--sidecar", f"{opts.program}={opts.port}"]
    return argv + ["--health-timeout", num_arg(common.health_timeout)] + metrics_argv(common)


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
        filewrite.check_user(req.user, *owner)
        if owner[0] != os.geteuid():  # rendering as the user itself crosses no privilege boundary
            filewrite.check_out_dir(req.out_dir, owner[0], req.user)
    uid, gid = owner if owner is not None else (None, None)
    for s in sidecars:
        if req.log_file:
            filewrite.check_folder("--log-file", s.log_file)
        if req.state_file:
            filewrite.check_folder("--state-file", s.state_file, uid, gid, req.user)
    if req.metrics_file:
        filewrite.check_folder("--metrics-file", req.metrics_file, uid, gid, req.user)
    places = [req.out_dir] + [s.out_dir for s in sidecars] + [s.log_file for s in sidecars]
    places += [s.listener_log_file for s in sidecars[:1]]
    if owner is not None:
        places += [os.path.join(s.out_dir, RUN_DIR) for s in sidecars]
    for path in places:
        filewrite.check_no_link(path)
