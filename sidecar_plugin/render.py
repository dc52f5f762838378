"""Turn a profile and options into LiteLLM's YAML and a supervisord include.

Rendering is split in two: ``render_files`` is pure (inputs -> file contents),
so determinism and the secret rules are unit-testable; ``filewrite``
writes only what changed, atomically, with the right owners and modes. Deterministic
output matters: config diffs, ``apply`` and tests must be stable across renders.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import sys
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import yaml

from sidecar_plugin import ini
from sidecar_plugin.discovery import process_name
from sidecar_plugin.errors import BinaryNotFoundError
from sidecar_plugin.profile import Profile, alias, openrouter_model

DEFAULT_PORT = 4000
DEFAULT_PROGRAM = "agentroute-sidecar"
ALLOWED_OPENAI_PARAMS = ["thinking", "betas"]
PROGRAM_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
MARKER_ENV = "SIDECAR_PLUGIN_TREE"
# The listener exits with this when it must not run (another listener owns the
# state file): an expected exit, so supervisord does not restart it in a loop.
EXIT_REFUSED = 78

LITELLM_YAML = "litellm.yaml"
MASTER_KEY = "master.key"
SIDECAR_CONF = "sidecar.conf"
LISTENER_SUFFIX = "-health"


class RenderError(ValueError):
    """Bad options or environment; ``str()`` is the one line for the operator."""


class BinaryNotFound(RenderError, BinaryNotFoundError):
    """The LiteLLM binary is not installed where render can see it."""

    def __init__(self, binary: str) -> None:
        BinaryNotFoundError.__init__(self, os.path.basename(binary) or binary)


@dataclass(frozen=True)
class RenderOptions:
    """Everything render needs besides the profile and the secrets.

    Paths are absolute: supervisord runs with another working directory and
    another PATH than the operator's shell.
    """

    out_dir: str
    binary: str
    listener_command: Tuple[str, ...]
    port: int = DEFAULT_PORT
    host: str = "127.0.0.1"
    program: str = DEFAULT_PROGRAM
    workers: int = 1
    health_timeout: float = 20.0
    stop_timeout: int = 10
    state_file: str = ""
    log_file: str = ""
    listener_log_file: str = ""
    autostart: bool = True
    user: str = ""
    metrics_file: str = ""
    group: str = ""

    @property
    def config_path(self) -> str:
        return os.path.join(self.out_dir, LITELLM_YAML)

    @property
    def group_name(self) -> str:
        """The supervisord group: the fleet's, else the program's own."""
        return self.group or self.program

    @property
    def process_name(self) -> str:
        """The name supervisord's XML-RPC knows the program by."""
        return process_name(self.program, self.group)


@dataclass(frozen=True)
class RenderedFile:
    path: str
    data: bytes
    mode: int


def resolve_binary(binary: str, extra_dirs: Sequence[str] = ()) -> str:
    """Return the absolute path of ``binary`` or raise BinaryNotFound.

    Resolved at render time because supervisord's PATH is not the operator's.
    The interpreter's own bin folder is searched after PATH, so a LiteLLM
    installed in the same virtualenv is found without activating it.
    """
    if os.sep in binary:
        path = os.path.abspath(binary)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
        raise BinaryNotFound(binary)
    found = shutil.which(binary)
    if found is None:
        for folder in extra_dirs:
            found = shutil.which(binary, path=folder)
            if found:
                break
    if found is None:
        raise BinaryNotFound(binary)
    return os.path.abspath(found)


def listener_entry_point() -> Tuple[str, ...]:
    """Return the absolute command that runs this package's CLI under supervisord."""
    script = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "sidecar-plugin")
    if os.path.isfile(script) and os.access(script, os.X_OK):
        return (script,)
    return (os.path.abspath(sys.executable), "-m", "sidecar_plugin")


def marker_value(program: str, config_path: str) -> str:
    """Return the value that marks every process of one rendered sidecar's tree.

    It names the config too, so two supervisords running a program of the same
    name (a test beside a demo) never mistake each other's processes.
    """
    return f"{program}@{config_path}"


def config_version(data: bytes) -> str:
    """Return a short version tag of a rendered LiteLLM config.

    The listener records the version a sidecar was started with, so ``apply``
    can tell a sidecar still running an older config (LiteLLM reads it only at
    start; a re-render followed by ``supervisorctl update`` does not restart a
    program whose command is unchanged). A truncated SHA-256 says nothing
    about the keys inside.
    """
    return hashlib.sha256(data).hexdigest()[:16]


def file_version(path: str) -> Optional[str]:
    """Return ``config_version`` of the file at ``path``, or None when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            return config_version(fh.read())
    except OSError:
        return None


def new_master_key() -> str:
    """Return a fresh master key: LiteLLM wants the ``sk-`` prefix; 256 random bits."""
    return "sk-" + secrets.token_urlsafe(32)


def render_litellm_yaml(profile: Profile, api_key: str, master_key: str) -> bytes:
    """Return LiteLLM's proxy config: one entry per tier, sorted by alias."""
    entries = []
    for tier in sorted(profile.models, key=alias):
        params: Dict[str, object] = {
            "model": openrouter_model(profile.models[tier]),
            "api_key": api_key,
            "allowed_openai_params": list(ALLOWED_OPENAI_PARAMS),
        }
        if profile.api_base:
            params["api_base"] = profile.api_base
        entries.append({"model_name": alias(tier), "litellm_params": params})
    doc = {"model_list": entries, "general_settings": {"master_key": master_key}}
    header = f"# Rendered by sidecar-plugin from {profile.source}; holds secrets (mode 0600).\n"
    return (header + yaml.safe_dump(doc, sort_keys=True, default_flow_style=False)).encode("utf-8")


def _ini(value: str, what: str = "a path") -> str:
    """Return a plain value as supervisord reads it back exactly (see ``ini``), or raise RenderError."""
    try:
        return ini.raw(value, what)
    except ini.IniError as exc:
        raise RenderError(str(exc)) from None


def _log(value: str, what: str) -> str:
    try:
        return ini.logfile(value, what)
    except ini.IniError as exc:
        raise RenderError(str(exc)) from None


def _cmd(argv: Sequence[str]) -> str:
    try:
        return ini.command(argv)
    except ini.IniError as exc:
        raise RenderError(str(exc)) from None


def _env(value: str, what: str) -> str:
    try:
        return ini.env_value(value, what)
    except ini.IniError as exc:
        raise RenderError(str(exc)) from None


def _comment(value: str, what: str) -> str:
    try:
        return ini.comment(value, what)
    except ini.IniError as exc:
        raise RenderError(str(exc)) from None


def sidecar_command(opts: RenderOptions) -> List[str]:
    """Return the LiteLLM command line of the ``[program:]`` section."""
    argv = [opts.binary, "--config", opts.config_path, "--host", opts.host, "--port", str(opts.port)]
    if opts.workers > 1:
        argv += ["--num_workers", str(opts.workers)]
    return argv


def listener_argv(opts: RenderOptions) -> List[str]:
    """Return the listener command line of the ``[eventlistener:]`` section."""
    return list(opts.listener_command) + [
        "listen",
        "--program", opts.program,
        "--host", opts.host,
        "--port", str(opts.port),
        "--state-file", opts.state_file,
        "--log-file", opts.log_file,
        "--config", opts.config_path,
        "--health-timeout", num_arg(opts.health_timeout),
    ] + metrics_argv(opts)


def metrics_argv(opts: RenderOptions) -> List[str]:
    """Return the listener's ``--metrics-file`` option, when metrics are asked for."""
    return ["--metrics-file", opts.metrics_file] if opts.metrics_file else []


def num_arg(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def program_section(opts: RenderOptions) -> List[str]:
    """Return the ``[program:]`` section of one sidecar.

    ``stopasgroup``/``killasgroup`` because killing only the immediate pid
    leaves uvicorn workers orphaned and the port held; the listener reaps what
    escapes the group. No secret goes here: LiteLLM reads them from the 0600
    YAML, and this file is typically world-readable under /etc.
    """
    p = opts.program
    return [
        f"[program:{p}]",
        f"command={_cmd(sidecar_command(opts))}",
        f"directory={_ini(opts.out_dir, '--out-dir')}",
        f'environment=LITELLM_LOCAL_MODEL_COST_MAP="True",{MARKER_ENV}={_env(marker_value(p, opts.config_path), "--out-dir")}',
        "umask=077",  # files LiteLLM itself creates are its own (the log is supervisord's: see safefs)
        f"autostart={'true' if opts.autostart else 'false'}",
        "autorestart=true",
        *([f"user={_ini(opts.user, '--user')}"] if opts.user else []),
        "startsecs=1",
        "startretries=3",
        "stopsignal=TERM",
        f"stopwaitsecs={opts.stop_timeout}",
        "stopasgroup=true",
        "killasgroup=true",
        "redirect_stderr=true",
        f"stdout_logfile={_log(opts.log_file, '--log-file')}",
        "stdout_logfile_maxbytes=10MB",
        "stdout_logfile_backups=3",
        "priority=900",
        "",
    ]


def listener_section(name: str, argv: Sequence[str], opts: RenderOptions) -> List[str]:
    """Return the ``[eventlistener:]`` section running the health listener ``argv``."""
    return [
        f"[eventlistener:{name}]",
        f"command={_cmd(argv)}",
        "events=PROCESS_STATE,TICK_5",
        "buffer_size=8192",  # a storm of other programs' events must not drop ours
        "autostart=true",
        "autorestart=unexpected",
        *([f"user={_ini(opts.user, '--user')}"] if opts.user else []),
        f"exitcodes=0,{EXIT_REFUSED}",
        "startsecs=0",
        "stopwaitsecs=5",
        "stdout_logfile=NONE",  # stdout is the protocol channel, nothing to keep
        f"stderr_logfile={_log(opts.listener_log_file, '--out-dir')}",
        "stderr_logfile_maxbytes=5MB",
        "stderr_logfile_backups=2",
        "priority=100",
        "",
    ]


def _header(sources: Sequence[Profile], tiers: str) -> List[str]:
    return [
        f"; Rendered by sidecar-plugin from {_comment(', '.join(p.source for p in sources), '--profile')}; "
        "re-render instead of editing.",
        _comment(tiers, "a profile's name"),
        "",
    ]


def render_sidecar_conf(profile: Profile, opts: RenderOptions) -> bytes:
    """Return the supervisord include of one sidecar: the program and its health listener."""
    tiers = f"; Profile {profile.name!s}: tiers {', '.join(alias(t) for t in sorted(profile.models))}."
    lines = _header([profile], tiers) + program_section(opts) + listener_section(
        opts.program + LISTENER_SUFFIX, listener_argv(opts), opts)
    return "\n".join(lines).encode("utf-8")


def render_group_conf(sidecars: Sequence[Tuple[Profile, RenderOptions]], group: str,
                      listener: Sequence[str], listener_opts: RenderOptions) -> bytes:
    """Return the include of several sidecars: one ``[group:]``, their programs, one listener.

    One listener for all keeps the cost of watching flat as profiles are added;
    the group lets an operator act on every sidecar at once (``supervisorctl
    restart agentroute:*``).
    """
    tiers = "; " + "; ".join(f"{o.program}: port {o.port}" for _, o in sidecars) + "."
    lines = _header([p for p, _ in sidecars], tiers)
    lines += [f"[group:{group}]", "programs=" + ",".join(o.program for _, o in sidecars), "priority=900", ""]
    for _, opts in sidecars:
        lines += program_section(opts)
    lines += listener_section(group + LISTENER_SUFFIX, listener, listener_opts)
    return "\n".join(lines).encode("utf-8")


def render_files(profile: Profile, opts: RenderOptions, api_key: str, master_key: str,
                 write_master_key: bool) -> List[RenderedFile]:
    """Return every file render writes, in the order it writes them."""
    files = [RenderedFile(opts.config_path, render_litellm_yaml(profile, api_key, master_key), 0o600)]
    if write_master_key:
        files.append(master_key_file(opts.out_dir, master_key))
    files.append(RenderedFile(os.path.join(opts.out_dir, SIDECAR_CONF), render_sidecar_conf(profile, opts), 0o644))
    return files


def master_key_file(out_dir: str, master_key: str) -> RenderedFile:
    """Return ``master.key`` (0600) holding a generated master key, so re-renders reuse it."""
    return RenderedFile(os.path.join(out_dir, MASTER_KEY), (master_key + "\n").encode(), 0o600)


def choose_master_key(env: Mapping[str, str], env_name: str, out_dir: str) -> Tuple[str, bool]:
    """Return (master key, whether master.key must hold it).

    The environment wins; else the key generated by an earlier render is
    reused, so re-rendering is byte-identical and clients keep their key.
    """
    value = env.get(env_name, "")
    if value:
        if not value.startswith("sk-") or any(ch.isspace() for ch in value):
            raise RenderError(f"{env_name}: the master key must start with 'sk-' and hold no spaces (LiteLLM requires it)")
        return value, False
    path = os.path.join(out_dir, MASTER_KEY)
    try:
        existing = read_beside(out_dir, MASTER_KEY, 4096).decode("utf-8", "replace").strip()
    except OSError as exc:
        raise RenderError(f"{path}: cannot read the master key: {exc.strerror or exc}") from None
    if existing:
        if not existing.startswith("sk-"):
            raise RenderError(f"{path}: the saved master key must start with 'sk-'; delete the file to generate a new one")
        return existing, True
    return new_master_key(), True


def read_beside(folder: str, name: str, limit: int) -> bytes:
    """Return a file of the out-dir (empty when it or the folder is absent); never through a link."""
    from sidecar_plugin import safefs

    try:
        dfd = safefs.open_dir(folder)
    except FileNotFoundError:
        return b""
    try:
        return safefs.read_file(dfd, name, limit, shown=os.path.join(folder, name)) or b""
    finally:
        os.close(dfd)


def lookup_user(name: str) -> Tuple[int, int]:
    """Return (uid, gid) of ``name``, or raise RenderError."""
    import pwd

    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        raise RenderError(f"--user: no such user {name!r}") from None
    return pw.pw_uid, pw.pw_gid


def check_options(opts: RenderOptions) -> None:
    """Refuse options supervisord or LiteLLM would choke on, with one line."""
    if not PROGRAM_RE.match(opts.program):
        raise RenderError(f"--program: must match [A-Za-z0-9][A-Za-z0-9._-]* (got {opts.program!r})")
    if not 1 <= opts.port <= 65535:
        raise RenderError(f"--port: must be from 1 to 65535 (got {opts.port})")
    if opts.workers < 1:
        raise RenderError(f"--workers: must be at least 1 (got {opts.workers})")
    if opts.health_timeout <= 0:
        raise RenderError(f"--health-timeout: must be more than 0 seconds (got {opts.health_timeout:g})")
    if opts.stop_timeout < 1:
        raise RenderError(f"--stop-timeout: must be at least 1 second (got {opts.stop_timeout})")
    if not opts.host or any(ch.isspace() for ch in opts.host):
        raise RenderError(f"--host: must be an address to bind (got {opts.host!r})")
    check_representable(opts)


def check_representable(opts: RenderOptions) -> None:
    """Refuse, naming the option, any value supervisord would not read back exactly.

    Checked before anything is written; the writers check again (``ini``),
    so nothing unchecked can reach the include.
    """
    for flag, value in (("--out-dir", opts.out_dir), ("--binary", opts.binary), ("--state-file", opts.state_file),
                        ("--log-file", opts.log_file), ("--metrics-file", opts.metrics_file), ("--host", opts.host),
                        ("--user", opts.user), ("--out-dir", opts.listener_log_file)):
        if value:
            _ini(value, flag)
    _env(marker_value(opts.program, opts.config_path), "--out-dir")
    for arg in opts.listener_command:
        _ini(arg, "the path this package is installed at")
    _cmd(sidecar_command(opts))
    _cmd(listener_argv(opts))


def optional_port(profile: Profile, cli_port: Optional[int]) -> int:
    """Return the sidecar port: the CLI wins, then the profile, then 4000."""
    if cli_port is not None:
        return cli_port
    return profile.port if profile.port is not None else DEFAULT_PORT
