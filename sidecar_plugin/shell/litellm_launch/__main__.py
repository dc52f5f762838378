"""Serve LiteLLM's proxy on the listening socket supervisord hands over as fd 0 (``[fcgi-program]``).

Run with LiteLLM's own interpreter (the one of the ``--binary`` install), as
``python <this folder> --config C --host H --port P [--num_workers N]
[--timeout_worker_healthcheck S]``: the flags render would give LiteLLM's CLI.
It imports nothing of sidecar_plugin (another interpreter may not have it).

Why not LiteLLM's CLI: the CLI binds the port itself, so the socket dies with
its process, and it imports all of LiteLLM in a parent that only supervises
(about 270 MB). This launcher does what the CLI does before ``uvicorn.run``
for a config-file proxy (``WORKER_CONFIG``, ``CONFIG_FILE_PATH``,
``NUM_WORKERS``) and runs uvicorn on the inherited socket, whose lifetime is
supervisord's, with the workers forked from a process that imported LiteLLM once
(``preload``). It also serves a private unix socket,
``@$SIDECAR_HEALTH_SOCKET/<its pid>`` (abstract), that only this tree answers:
the listener's health probes go there, since the shared port may be answered
by a worker of an older tree that is still draining. The CLI's database and
KMS steps are not replicated (the profiles need none); its Prometheus
multiprocess step is (``multiproc_metrics``).
"""

import argparse
import importlib
import json
import os
import socket
import sys
from typing import Any, Dict, List, Optional, Tuple

NO_SOCKET = ("sidecar launcher: fd 0 is not a listening socket: supervisord could not listen on the port "
             "(another process holds it?), or this was not run as supervisord's [fcgi-program]")


def listening_fd0() -> Optional[int]:
    """Move a listening socket on fd 0 off it (LiteLLM's subprocesses must not get it as stdin); return its fd.

    None when fd 0 is no listening socket (it is left as it is).
    """
    try:
        fd = os.dup(0)
    except OSError:
        return None
    try:
        sock = socket.socket(fileno=os.dup(fd))
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        sock.close()
    except OSError:
        listening = 0
    if not listening:
        os.close(fd)
        return None
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    return fd


def take_listening_socket() -> int:
    """Return the fd of the listening socket supervisord handed over; exit saying why when there is none."""
    fd = listening_fd0()
    if fd is None:
        sys.exit(NO_SOCKET)
    return fd


def health_socket(handed: Optional[int] = None) -> Optional[socket.socket]:
    """Return the tree's private health socket (listening, inheritable), or None when not asked for."""
    prefix = os.environ.get("SIDECAR_HEALTH_SOCKET")
    if not prefix:
        return None
    if handed is not None:  # a re-exec: the same pid, so the same name, held by the previous workers
        return socket.socket(fileno=handed)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind("\0%s/%d" % (prefix, os.getpid()))
    sock.listen(64)
    sock.set_inheritable(True)
    return sock


def preload(app: str) -> None:
    """Import the app here once and fork the workers from this process (copy-on-write).

    uvicorn spawns each worker as a fresh interpreter that imports all of
    LiteLLM again (about 300 MB each); forked from a process that imported it,
    the workers share those pages: measured 404 MB PSS for the launcher and 2
    workers instead of 603, and a faster start. LiteLLM's own gunicorn mode
    preloads the same way. Each worker still reads the config at its startup,
    so a rolling reload (SIGHUP) picks up a changed ``litellm.yaml``; new
    LiteLLM code needs a restart (it does anyway: apply restarts for a new
    binary).
    """
    import gc
    import multiprocessing

    import uvicorn._subprocess

    if not hasattr(uvicorn._subprocess, "spawn"):  # another uvicorn: keep its own way
        return
    importlib.import_module(app.partition(":")[0])
    sibling("warmup").preimport(app)  # what each worker's warm-up would load alone, shared
    gc.freeze()  # the imported objects stay out of the collector's way: fewer pages copied
    uvicorn._subprocess.spawn = multiprocessing.get_context("fork")


def litellm_version() -> str:
    """The version of the LiteLLM this interpreter imports (said in the log: apply restarts for a new one)."""
    try:
        import importlib.metadata

        return importlib.metadata.version("litellm")
    except Exception:  # noqa: BLE001 (only said)
        return "(version unknown)"


def parse(argv: List[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="sidecar launcher")
    p.add_argument("--config", required=True)
    p.add_argument("--host", default="127.0.0.1")  # supervisord bound it: only said for the logs
    p.add_argument("--port", type=int, default=4000)
    p.add_argument("--num_workers", type=int, default=1)
    p.add_argument("--timeout_worker_healthcheck", type=int, default=60)
    # LiteLLM's CLI flags, mapped to uvicorn's limit_max_requests (+ jitter): a worker retires after so many
    p.add_argument("--max_requests_before_restart", type=int, default=None)
    p.add_argument("--max_requests_before_restart_jitter", type=int, default=0)
    # workers replaceable one by one on the listener's request (a memory budget): uvicorn's supervisor
    # runs even with one worker, so a replacement serves before the old one drains
    p.add_argument("--worker_control", action="store_true")
    return p.parse_args(argv)


def uvicorn_options(args: argparse.Namespace, uvicorn: Any) -> Dict[str, Any]:
    """The uvicorn settings LiteLLM's CLI would give (drain window, max requests + jitter), and a keep-alive
    longer than the gateway's idle timeout (``drain_connections.keep_alive_timeout``)."""
    extra: Dict[str, Any] = {"timeout_graceful_shutdown": int(os.environ["GRACEFUL_SHUTDOWN_TIMEOUT"])} \
        if os.environ.get("GRACEFUL_SHUTDOWN_TIMEOUT", "").isdigit() else {}
    extra["timeout_keep_alive"] = sibling("drain_connections").keep_alive_timeout()
    if args.max_requests_before_restart:
        from inspect import signature

        extra["limit_max_requests"] = args.max_requests_before_restart
        jitter = "limit_max_requests_jitter" in signature(uvicorn.Config).parameters  # uvicorn >= 0.41
        if args.max_requests_before_restart_jitter and jitter:
            extra["limit_max_requests_jitter"] = args.max_requests_before_restart_jitter
    return extra


def sibling(name: str) -> Any:
    """A module of this folder: by name when run as ``python <this folder>``, else from the package."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return importlib.import_module("sidecar_plugin.shell.litellm_launch." + name)


def workers_patched(app: str) -> None:
    """uvicorn changed for every worker: a drain resets no connection; the app warmed before it accepts."""
    sibling("drain_connections").drain_without_resets()
    sibling("warmup").install(app)  # LiteLLM's app only, unless SIDECAR_WARMUP says otherwise


def supervise(config: Any, sockets: List[socket.socket], control: bool,
              handover: Tuple[int, Optional[socket.socket], Tuple[int, ...]]) -> None:
    """Run uvicorn's supervisor until it exits: a hung worker replaced alone, one replaceable on request when
    ``control``, the whole tree replaced in place on SIGUSR2 (``reexec``; ``handover``: the fd and sockets)."""
    hang_watch, worker_replace = sibling("hang_watch"), sibling("worker_replace")
    if hang_watch.beating(config, worker_replace.supported()):
        hang_watch.recycled_by_launcher(config)  # a worker past --max_requests_before_restart: a new one first
    else:
        print("sidecar launcher: no hung-worker watch (this uvicorn's supervisor has another shape)", flush=True)
    worker_replace.answered_or_exited()
    supervisor = worker_replace.replacing_multiprocess()(config, sockets=sockets)
    supervisor.hang_window = hang_watch.hang_window()
    supervisor.listen_fd, supervisor.health, supervisor.adopted = handover
    if control:
        worker_replace.serve_control(supervisor, os.environ.get("SIDECAR_HEALTH_SOCKET"))
    supervisor.run()


def whole_lines(*streams: Any) -> None:
    """Have each of ``streams`` write a line in one write, not its text and its newline apart.

    The launcher and its workers share one log (supervisord's). Under
    ``PYTHONUNBUFFERED`` (set on many hosts, and inherited through supervisord)
    a text stream writes through: ``print`` writes its text, then the newline,
    and a worker's line written between them was glued to the launcher's
    (seen: ``... LiteLLM 1.0.1INFO: 127.0.0.1 ...``). Line buffering writes
    the whole line at its newline; the workers (forked) inherit it.
    """
    for stream in streams:
        try:
            stream.reconfigure(line_buffering=True, write_through=False)
        except (AttributeError, ValueError, OSError):  # not a text stream of io's: as it is
            pass


def main(argv: Optional[List[str]] = None) -> None:
    import signal

    signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # a re-exec asked while LiteLLM imports: not a death
    args = parse(sibling("reexec").launched(sys.argv[1:] if argv is None else argv))
    config = os.path.abspath(args.config)
    # what `litellm --config C --num_workers N` sets before uvicorn.run (proxy_cli.run_server)
    os.environ["WORKER_CONFIG"] = json.dumps({"config": config, "drop_params": False, "debug": False,
                                              "detailed_debug": False, "save": False, "use_queue": False})
    os.environ["CONFIG_FILE_PATH"] = config
    os.environ["NUM_WORKERS"] = str(args.num_workers)
    handed = sibling("reexec").inherited()
    fd = handed["listen"] if handed else take_listening_socket()
    metrics = sibling("multiproc_metrics")
    # before LiteLLM (and prometheus_client) is imported, here or in a worker; a re-exec in place keeps the
    # folder: the previous workers' counts stay in the sum (no reset where nothing restarted)
    metrics.fresh_folder(keep=bool(handed))
    import uvicorn

    config = uvicorn.Config(os.environ.get("SIDECAR_APP", "litellm.proxy.proxy_server:app"), fd=fd,
                            workers=args.num_workers, server_header=False,
                            timeout_worker_healthcheck=args.timeout_worker_healthcheck,
                            **uvicorn_options(args, uvicorn))
    # a worker recycled (max requests) or replaced is forked again by uvicorn's supervisor while the
    # others (or the socket's queue) take the connections: with one worker too, never the launcher's exit
    supervised = args.num_workers > 1 or bool(args.max_requests_before_restart) or args.worker_control
    workers_patched(config.app)
    if supervised:
        preload(config.app)
    sockets = [config.bind_socket()]
    private = health_socket(handed["health"] if handed else None)
    if private is not None:
        sockets.append(private)
    print("sidecar launcher: pid %d serves port %d (fd %d) with %d worker(s), LiteLLM %s"
          % (os.getpid(), args.port, fd, args.num_workers, litellm_version()), flush=True)
    if supervised:
        metrics.counted_over_workers()
        supervise(config, sockets, args.worker_control, (fd, private, tuple(handed["adopt"]) if handed else ()))
    else:
        uvicorn.Server(config).run(sockets=sockets)


if __name__ == "__main__":  # uvicorn's workers are spawned ("spawn"): they must not run main again
    whole_lines(sys.stdout, sys.stderr)
    main()
