"""Turn profiles and options into LiteLLM's YAML and a supervisord include: file contents only.

Pure (inputs -> bytes), so determinism and the secret rules are unit-tested
in-process; ``shell.build`` gathers the inputs (environment, binary, previous
render) and ``shell.files`` writes the result. Deterministic output matters:
config diffs, ``apply`` and tests must be stable across renders.

There is one path: a single sidecar is a fleet of one. A ``Plan`` holds the
sidecars, the group they share (a fleet's ``[group:agentroute]``; one sidecar
is its own group) and the one listener that watches them all.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple

from sidecar_plugin.core import ini
from sidecar_plugin.core.listen_args import ListenerOptions, listen_argv
from sidecar_plugin.core.litellm_yaml import render_litellm_yaml
from sidecar_plugin.core.profile import Profile, alias
from sidecar_plugin.core.retry import RETRY_DELAY, RETRY_MAX_DELAY, RETRY_RESET_AFTER
from sidecar_plugin.names import (
    DEFAULT_HOST, DEFAULT_PORT, DEFAULT_PROGRAM, DEFAULT_STOP_TIMEOUT, DEFAULT_WORKERS, EXIT_REFUSED, LISTENER_SUFFIX,
    LITELLM_YAML, MARKER_ENV, MASTER_KEY, RECORD_NAME, RUN_DIR, SCHEMA, SIDECAR_CONF, STOP_MARGIN,
    WORKER_HEALTHCHECK, marker_value, process_name,
)

PROGRAM_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")


class RenderError(ValueError):
    """Bad options or environment; ``str()`` is the one line for the operator."""


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
    host: str = DEFAULT_HOST
    program: str = DEFAULT_PROGRAM
    workers: int = DEFAULT_WORKERS
    health_timeout: float = 20.0
    stop_timeout: int = DEFAULT_STOP_TIMEOUT
    hang_window: float = 20.0
    state_file: str = ""
    log_file: str = ""
    listener_log_file: str = ""
    autostart: bool = True
    user: str = ""
    metrics_file: str = ""
    group: str = ""
    retry_delay: float = RETRY_DELAY
    retry_max_delay: float = RETRY_MAX_DELAY
    retry_reset_after: float = RETRY_RESET_AFTER

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


def _checked(write: Callable[..., str], *args: Any) -> str:
    """Run one of ``ini``'s writers; what it cannot write exactly is the operator's one-line error."""
    try:
        return write(*args)
    except ini.IniError as exc:
        raise RenderError(str(exc)) from None


def _ini(value: str, what: str = "a path") -> str:
    """Return a plain value as supervisord reads it back exactly (see ``ini``), or raise RenderError."""
    return _checked(ini.raw, value, what)


def _log(value: str, what: str) -> str:
    return _checked(ini.logfile, value, what)


def _cmd(argv: Sequence[str]) -> str:
    return _checked(ini.command, argv)


def _env(value: str, what: str) -> str:
    return _checked(ini.env_value, value, what)


def _comment(value: str, what: str) -> str:
    return _checked(ini.comment, value, what)


def sidecar_command(opts: RenderOptions) -> List[str]:
    """Return the LiteLLM command line of the ``[program:]`` section."""
    argv = [opts.binary, "--config", opts.config_path, "--host", opts.host, "--port", str(opts.port)]
    if opts.workers > 1:
        # uvicorn's rolling replacement (SIGHUP) waits this long for each new worker
        argv += ["--num_workers", str(opts.workers), "--timeout_worker_healthcheck", str(WORKER_HEALTHCHECK)]
    return argv


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
        f'environment=LITELLM_LOCAL_MODEL_COST_MAP="True",GRACEFUL_SHUTDOWN_TIMEOUT="{opts.stop_timeout}",'
        f'{MARKER_ENV}={_env(marker_value(p, opts.config_path), "--out-dir")}',
        "umask=077",  # files LiteLLM itself creates are its own (the log is supervisord's: see shell.safefs)
        f"autostart={'true' if opts.autostart else 'false'}",
        "autorestart=true",
        *([f"user={_ini(opts.user, '--user')}"] if opts.user else []),
        "startsecs=1",
        "startretries=3",
        "stopsignal=TERM",
        # LiteLLM drains in-flight requests for stop_timeout (GRACEFUL_SHUTDOWN_TIMEOUT above);
        # supervisord's SIGKILL comes only after a margin for its own shutdown.
        f"stopwaitsecs={opts.stop_timeout + STOP_MARGIN}",
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
        # REMOTE_COMMUNICATION: an operator's stop of a sidecar the listener retries
        # (already down, so supervisord has no event for it) is told by the client.
        "events=PROCESS_STATE,TICK_5,REMOTE_COMMUNICATION",
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


def watch_options(opts: RenderOptions) -> ListenerOptions:
    """Return what the listener watches of one sidecar, as its command line will say it."""
    return ListenerOptions(program=opts.program, port=opts.port, state_file=opts.state_file,
                           log_file=opts.log_file, host=opts.host, group=opts.group or None,
                           config_path=opts.config_path, health_timeout=opts.health_timeout,
                           retry_delay=opts.retry_delay, retry_max_delay=opts.retry_max_delay,
                           retry_reset_after=opts.retry_reset_after, hang_window=opts.hang_window)


@dataclass(frozen=True)
class Plan:
    """The sidecars of one render, the group they share and the listener that watches them.

    ``group`` is the fleet's group (several profiles) or None (one sidecar,
    which is its own group); ``common`` holds what the sidecars share (the
    listener's command, host, timeouts, user, metrics file, listener log).
    """

    out_dir: str
    sidecars: Tuple[Tuple[Profile, RenderOptions], ...]
    common: RenderOptions
    group: Optional[str] = None

    @property
    def options(self) -> Tuple[RenderOptions, ...]:
        return tuple(o for _, o in self.sidecars)

    @property
    def listener(self) -> str:
        """The ``[eventlistener:]`` name: the fleet's group, else the program, plus ``-health``."""
        return (self.group or self.sidecars[0][1].program) + LISTENER_SUFFIX

    @property
    def groups(self) -> List[str]:
        """The supervisord groups this include defines (a program or listener alone is its own group)."""
        return sorted({o.group_name for o in self.options} | {self.listener})

    def listener_argv(self) -> List[str]:
        return listen_argv(self.common.listener_command, [watch_options(o) for o in self.options],
                           self.out_dir if self.group else None, self.common.metrics_file,
                           RUN_DIR if self.group and self.common.user else "")


def render_sidecar_conf(plan: Plan) -> bytes:
    """Return the supervisord include: the group (a fleet), each program, the one listener.

    One listener for all keeps the cost of watching flat as profiles are
    added; the group lets an operator act on every sidecar at once
    (``supervisorctl restart agentroute:*``).
    """
    sources = ", ".join(p.source for p, _ in plan.sidecars)
    if plan.group:
        about = "; " + "; ".join(f"{o.program}: port {o.port}" for o in plan.options) + "."
    else:
        profile = plan.sidecars[0][0]
        about = f"; Profile {profile.name!s}: tiers {', '.join(alias(t) for t in sorted(profile.models))}."
    lines = [f"; Rendered by sidecar-plugin from {_comment(sources, '--profile')}; re-render instead of editing.",
             _comment(about, "a profile's name"), ""]
    if plan.group:
        lines += [f"[group:{plan.group}]", "programs=" + ",".join(o.program for o in plan.options),
                  "priority=900", ""]
    for opts in plan.options:
        lines += program_section(opts)
    lines += listener_section(plan.listener, plan.listener_argv(), plan.common)
    return "\n".join(lines).encode("utf-8")


def render_record(plan: Plan) -> bytes:
    """Return ``sidecar.json``: what the next render and apply need to know of this one.

    Which supervisord groups are ours (apply touches no other), which port
    each sidecar has (a re-render keeps them) and its LiteLLM command (apply
    tells a change LiteLLM can reload from one that needs a restart), as data
    rather than read back from the ini.
    """
    doc = {
        "schema": SCHEMA,
        "groups": plan.groups,
        "listener": plan.listener,
        "sidecars": {o.program: {"port": o.port, "group": o.group_name, "state_file": o.state_file,
                                 "config": o.config_path, "command": sidecar_command(o)} for o in plan.options},
    }
    return (json.dumps(doc, sort_keys=True, indent=2) + "\n").encode("utf-8")


def render_files(plan: Plan, api_key: str, master_key: str, write_master_key: bool) -> List[RenderedFile]:
    """Return every file render writes, in the order it writes them."""
    files = [RenderedFile(o.config_path, render_litellm_yaml(p, api_key, master_key), 0o600)
             for p, o in plan.sidecars]
    if write_master_key:
        files.append(master_key_file(plan.out_dir, master_key))
    files.append(RenderedFile(os.path.join(plan.out_dir, SIDECAR_CONF), render_sidecar_conf(plan), 0o644))
    files.append(RenderedFile(os.path.join(plan.out_dir, RECORD_NAME), render_record(plan), 0o644))
    return files


def master_key_file(out_dir: str, master_key: str) -> RenderedFile:
    """Return ``master.key`` (0600) holding a generated master key, so re-renders reuse it."""
    return RenderedFile(os.path.join(out_dir, MASTER_KEY), (master_key + "\n").encode(), 0o600)


def check_representable(opts: RenderOptions) -> None:
    """Refuse, naming the option, any value supervisord would not read back exactly.

    Checked before anything is written; the section writers check again
    (``ini``), so nothing unchecked can reach the include.
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
    _log(opts.log_file, "--log-file")
