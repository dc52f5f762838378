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
supervisord's. It also serves a private unix socket,
``@$SIDECAR_HEALTH_SOCKET/<its pid>`` (abstract), that only this tree answers:
the listener's health probes go there, since the shared port may be answered
by a worker of an older tree that is still draining. The CLI's database, KMS
and Prometheus-multiprocess steps are not replicated (the profiles need none).
"""

import argparse
import json
import os
import socket
import sys


def take_listening_socket():
    """Move the listening socket off fd 0 (LiteLLM's subprocesses must not get it as stdin); return its fd."""
    try:
        fd = os.dup(0)
        sock = socket.socket(fileno=os.dup(fd))
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        sock.close()
    except OSError:
        listening = 0
    if not listening:
        sys.exit("sidecar launcher: fd 0 is not a listening socket: supervisord could not listen on the port "
                 "(another process holds it?), or this was not run as supervisord's [fcgi-program]")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    return fd


def health_socket():
    """Return the tree's private health socket (listening, inheritable), or None when not asked for."""
    prefix = os.environ.get("SIDECAR_HEALTH_SOCKET")
    if not prefix:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind("\0%s/%d" % (prefix, os.getpid()))
    sock.listen(64)
    sock.set_inheritable(True)
    return sock


def parse(argv):
    p = argparse.ArgumentParser(prog="sidecar launcher")
    p.add_argument("--config", required=True)
    p.add_argument("--host", default="127.0.0.1")  # supervisord bound it: only said for the logs
    p.add_argument("--port", type=int, default=4000)
    p.add_argument("--num_workers", type=int, default=1)
    p.add_argument("--timeout_worker_healthcheck", type=int, default=60)
    return p.parse_args(argv)


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    config = os.path.abspath(args.config)
    # what `litellm --config C --num_workers N` sets before uvicorn.run (proxy_cli.run_server)
    os.environ["WORKER_CONFIG"] = json.dumps({"config": config, "drop_params": False, "debug": False,
                                              "detailed_debug": False, "save": False, "use_queue": False})
    os.environ["CONFIG_FILE_PATH"] = config
    os.environ["NUM_WORKERS"] = str(args.num_workers)
    fd = take_listening_socket()
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    extra = {"timeout_graceful_shutdown": int(os.environ["GRACEFUL_SHUTDOWN_TIMEOUT"])} \
        if os.environ.get("GRACEFUL_SHUTDOWN_TIMEOUT", "").isdigit() else {}
    config = uvicorn.Config(os.environ.get("SIDECAR_APP", "litellm.proxy.proxy_server:app"), fd=fd,
                            workers=args.num_workers, server_header=False,
                            timeout_worker_healthcheck=args.timeout_worker_healthcheck, **extra)
    sockets = [config.bind_socket()]
    private = health_socket()
    if private is not None:
        sockets.append(private)
    print("sidecar launcher: pid %d serves port %d (fd %d) with %d worker(s)"
          % (os.getpid(), args.port, fd, args.num_workers), flush=True)
    if args.num_workers > 1:
        Multiprocess(config, sockets=sockets).run()
    else:
        uvicorn.Server(config).run(sockets=sockets)


if __name__ == "__main__":  # uvicorn's workers are spawned ("spawn"): they must not run main again
    main()
