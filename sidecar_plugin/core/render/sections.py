"""supervisord's ``[program:]`` and ``[eventlistener:]`` sections, and the check that they can be written.

Every value goes through ``ini``'s writers, which refuse what supervisord
would not read back exactly; ``check_representable`` runs the same writers
on the options before anything is written, so a bad value is the operator's
one-line error, never half a render. Assembling the sections into the
include is ``core.render.files``'s job.
"""

from __future__ import annotations

import json
from typing import Any, Callable, List, Sequence

from sidecar_plugin.core.render import ini
from sidecar_plugin.core.render.options import RenderError, RenderOptions
from sidecar_plugin.names import (
    EXIT_REFUSED, HEALTH_SOCKET_ENV, MARKER_ENV, MULTIPROC_ENV, STOP_MARGIN, WORKER_HEALTHCHECK, health_socket_name,
    marker_value,
)


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


def comment(value: str, what: str) -> str:
    """Return ``value`` as a comment line's text supervisord cannot misread, or raise RenderError."""
    return _checked(ini.comment, value, what)


def sidecar_command(opts: RenderOptions) -> List[str]:
    """Return the LiteLLM command line of the program section.

    When supervisord owns the socket and ``--binary`` is LiteLLM's own entry
    point, its interpreter runs the launcher (``shell.litellm_launch``) with
    the same flags: uvicorn serves the inherited socket, no CLI parent.
    """
    head = list(opts.launcher) if opts.supervisord_socket and opts.launcher else [opts.binary]
    argv = head + ["--config", opts.config_path, "--host", opts.host, "--port", str(opts.port)]
    if opts.workers > 1:
        # uvicorn's rolling replacement (SIGHUP) waits this long for each new worker
        argv += ["--num_workers", str(opts.workers), "--timeout_worker_healthcheck", str(WORKER_HEALTHCHECK)]
    if opts.max_requests:
        argv += ["--max_requests_before_restart", str(opts.max_requests)]
        if opts.max_requests_jitter:
            argv += ["--max_requests_before_restart_jitter", str(opts.max_requests_jitter)]
    if opts.memory_budget and head != [opts.binary]:  # the launcher replaces a worker the listener names
        argv += ["--worker_control"]
    return argv


def program_command(opts: RenderOptions) -> List[str]:
    """Return the program section's command: with a launcher, one that names only ``launch.json``.

    What changes there (the workers, ``--binary``'s interpreter, the launcher's
    flags) leaves the include as it was, so supervisord's ``update`` does not
    stop the program: apply writes the file and has the launcher re-execute
    itself in place (``shell.render.inplace``).
    """
    if not opts.launch_path:
        return sidecar_command(opts)
    return [opts.bootstrap, opts.launcher[1], "--launch", opts.launch_path]


def launch_doc(opts: RenderOptions) -> bytes:
    """Return ``launch.json``: the launcher's argv (its interpreter first); paths and flags, no secret."""
    return (json.dumps({"argv": sidecar_command(opts)}, indent=2) + "\n").encode("utf-8")


def program_section(opts: RenderOptions) -> List[str]:
    """Return the ``[program:]`` section of one sidecar.

    ``stopasgroup``/``killasgroup`` because killing only the immediate pid
    leaves uvicorn workers orphaned and the port held; the listener reaps what
    escapes the group. No secret goes here: LiteLLM reads them from the 0600
    YAML, and this file is typically world-readable under /etc.
    """
    p = opts.program
    return [
        *_head(opts),
        f"command={_cmd(program_command(opts))}",
        f"directory={_ini(opts.out_dir, '--out-dir')}",
        f'environment=LITELLM_LOCAL_MODEL_COST_MAP="True",GRACEFUL_SHUTDOWN_TIMEOUT="{opts.stop_timeout}",'
        f'{MARKER_ENV}={_env(marker_value(p, opts.config_path), "--out-dir")}' + _health_env(opts)
        + _metrics_env(opts),
        "umask=077",  # files LiteLLM itself creates are its own (the log is supervisord's: see shell.files.acl)
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


# Connections that wait in the kernel's queue while no process accepts (a restart):
# at 5 requests a second, a minute's worth and more.
SOCKET_BACKLOG = 2048


def _head(opts: RenderOptions) -> List[str]:
    """The section's name, and supervisord's socket when it owns it (``[fcgi-program]``).

    supervisord creates the socket and hands it to LiteLLM as fd 0; the
    ``sidecar`` rpcinterface holds it open (``shell.supervisord.held``), so connections
    wait in its queue while LiteLLM restarts instead of being refused.
    """
    if not opts.supervisord_socket:
        return [f"[program:{opts.program}]"]
    return [f"[fcgi-program:{opts.program}]", f"socket=tcp://{_ini(opts.host, '--host')}:{opts.port}",
            f"socket_backlog={SOCKET_BACKLOG}"]


def _health_env(opts: RenderOptions) -> str:
    if not opts.supervisord_socket:
        return ""
    return f",{HEALTH_SOCKET_ENV}={_env(health_socket_name(opts.program, opts.config_path), '--out-dir')}"


def plugin_section() -> List[str]:
    """Return the ``[rpcinterface:sidecar]`` section: the plugin that holds the port, loaded by the include alone.

    supervisord reads an included file into the same parser before it collects its rpcinterfaces, so the
    include needs no section of the operator's (the same section there is merged with this one). Rendered
    only when render asked supervisord's interpreter and it imports the plugin (``shell.render.plugin_host``):
    a factory supervisord cannot import would keep it from starting. Without the plugin an
    ``[fcgi-program]`` would end supervisord (``shell.supervisord.held`` says why), so none is rendered then.
    """
    return ["; The sidecar.* XML-RPC namespace, and what holds each sidecar's port open while supervisord runs.",
            "[rpcinterface:sidecar]", "supervisor.rpcinterface_factory = sidecar_plugin.rpc:make_rpcinterface", ""]


def _metrics_env(opts: RenderOptions) -> str:
    """prometheus_client's multiprocess folder: the launcher empties it at the tree's start (LiteLLM's CLI, in
    a fleet, does the same), each worker writes its samples there and LiteLLM's /metrics sums them."""
    if not opts.traffic_metrics:
        return ""
    return f",{MULTIPROC_ENV}={_env(opts.traffic_metrics_dir, '--out-dir')}"


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
    _metrics_env(opts)
    for arg in opts.listener_command:
        _ini(arg, "the path this package is installed at")
    _cmd(sidecar_command(opts))
    _cmd(program_command(opts))
    _log(opts.log_file, "--log-file")
