#!/usr/bin/env python3
"""A stand-in for the ``litellm`` proxy: same flags, same process shape, no 7 s start.

Like uvicorn, the parent binds the port (or, under supervisord's
``[fcgi-program]``, takes the listening socket it inherits on fd 0, as the
sidecar's launcher does, and serves the private health socket
``@$SIDECAR_HEALTH_SOCKET/<pid>`` beside it) and, with ``--num_workers N`` > 1,
forks N workers that accept on the shared socket; the workers survive a
SIGKILL of the parent, keep the port and keep answering (the failure the
listener exists for). ``fake_mode.json`` beside the config (re-read at every
start) makes it misbehave: ``start_delay``, ``exit_at_start``,
``never_healthy``, ``hang_after`` (its event loop blocks: alive, answering
nothing, SIGTERM ignored), ``setsid_worker``, ``print_secrets``,
``slow_health`` (seconds each health answer takes: an overloaded sidecar that
still answers; from ``slow_health_after`` seconds since start on, if given), ``health_trickle_after`` (from then on a health answer trickles
one byte every half second, forever), ``health_endless_after`` (from then on a
health answer is a ``200`` whose body never ends, at most 256 MB),
``worker_start_delay`` (seconds a new worker takes before it serves),
``start_burn`` (seconds its start spends burning CPU before it binds, as
LiteLLM's imports do: on a busy host a slow start that makes progress),
``start_stall`` (after that, it stops making progress: sleeps, never binds),
``stop_delay`` (seconds it takes to exit on a SIGTERM received before it serves),
``elsewhere_if_busy`` (as LiteLLM's CLI does on port 4000: when its port is
taken it serves on another one, so it never answers on its own), ``grow_mb``
(each ``/v1/messages`` keeps that many MB more, pages touched, at most
``grow_cap_mb``, default 256: a leaking worker for the memory budget; the
stand-in has no control socket, so a budget cannot replace its workers),
``die_after_respawn`` (read when a worker died: the parent starts another, then
SIGKILLs itself at once, so the new worker is an orphan born a moment before the
exit, as chaos once made it).
It answers what the gateway sends: ``/v1/messages`` and
``/v1/messages/count_tokens`` behind the master key (``Authorization: Bearer``
or ``x-api-key``), an alias it does not serve with LiteLLM's 400.

Starts are counted in ``fake_starts`` beside it (the harness resets it with
the mode), so a later start can differ from the first: ``slow_starts: N``
makes only the first N starts take ``start_delay`` (a slow boot under load),
``fail_starts: N`` makes the first N starts exit at once (a fault that goes away).
A model id containing ``refuse-config`` makes it reject its config and exit,
as LiteLLM does with a config it cannot load (a broken change to roll back).

Like LiteLLM on uvicorn: ``POST /v1/messages`` with ``"stream": true`` answers
server-sent events over ``stream_seconds`` (a field of the request), ending with
``message_stop``; a worker drains on SIGTERM (no new connection, in-flight
requests finish, for up to ``GRACEFUL_SHUTDOWN_TIMEOUT`` seconds); with
several workers, SIGHUP replaces them one at a time, each new worker (which
re-reads the config) serving before the old one retires, and a new worker that
is not ready within ``--timeout_worker_healthcheck`` aborts the replacement;
a worker that dies is respawned. ``--validate_config`` checks the config and
exits 0 or 1, as LiteLLM's does.
"""

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time
from typing import Any, Dict, List
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml


def count_start(config_path):
    """Return which start this is (1, 2, ...), counted in ``fake_starts`` beside the config."""
    path = os.path.join(os.path.dirname(os.path.abspath(config_path)), "fake_starts")
    try:
        with open(path) as fh:
            n = int(fh.read().strip() or 0) + 1
    except (OSError, ValueError):
        n = 1
    try:
        with open(path + ".tmp", "w") as fh:
            fh.write(str(n))
        os.replace(path + ".tmp", path)
    except OSError:  # a folder this user may not write (--user: the config's folder is root's)
        pass
    return n


def load(config_path):
    with open(config_path) as fh:
        cfg = yaml.safe_load(fh) or {}
    mode_path = os.path.join(os.path.dirname(os.path.abspath(config_path)), "fake_mode.json")
    try:
        with open(mode_path) as fh:
            mode = json.load(fh)
    except (OSError, ValueError):
        mode = {}
    return cfg, mode


class State:
    hung = False
    never_healthy = False
    models: List[Any] = []
    master_key = ""
    mode: Dict[str, Any] = {}
    started = time.monotonic()
    inflight = 0
    draining = False  # from a SIGTERM on, every answer says Connection: close (as the launcher's workers do)
    lock = threading.Lock()


def _after(key):
    """Whether the mode's ``key`` (seconds since start) has come."""
    at = State.mode.get(key)
    return at is not None and time.monotonic() - State.started >= float(at)


def configure(config_path):
    """(Re)read the config and the mode: every new worker does, as LiteLLM's workers do."""
    cfg, mode = load(config_path)
    State.models = [e.get("model_name") for e in cfg.get("model_list") or []]
    State.master_key = (cfg.get("general_settings") or {}).get("master_key", "")
    State.never_healthy = bool(mode.get("never_healthy"))
    State.mode = mode
    return cfg, mode


def refused_models(cfg):
    return [(e.get("litellm_params") or {}).get("model") for e in cfg.get("model_list") or []
            if "refuse-config" in str((e.get("litellm_params") or {}).get("model"))]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 5  # uvicorn's keep-alive timeout: an idle kept-alive connection is closed after it

    def log_message(self, fmt, *args):  # quiet
        pass

    def _hang_if_needed(self):
        while State.hung:
            time.sleep(3600)

    def _send(self, code, body, ctype="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        if State.draining:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self):
        auth = self.headers.get("Authorization", "")
        key = self.headers.get("x-api-key", "")
        return auth == f"Bearer {State.master_key}" or key == State.master_key

    def do_GET(self):
        self._hang_if_needed()
        if self.path == "/health/liveliness":
            if State.never_healthy:
                return self._send(503, {"error": "not ready"})
            if State.mode.get("slow_health") and ("slow_health_after" not in State.mode or _after("slow_health_after")):
                time.sleep(float(State.mode["slow_health"]))
            if _after("health_trickle_after"):
                return self._trickle()
            if _after("health_endless_after"):
                return self._endless()
            return self._send(200, b'"I\'m alive!"')
        if self.path == "/v1/models":
            if not self._authorized():
                return self._send(401, {"error": {"message": "Authentication Error"}})
            return self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in State.models]})
        return self._send(404, {"error": "not found"})

    def _trickle(self):
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        self.wfile.flush()
        while True:
            self.wfile.write(b"x")
            self.wfile.flush()
            time.sleep(0.5)

    def _endless(self):
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        block = b"y" * 65536
        for _ in range(4096):  # at most 256 MB: a bounded bomb
            self.wfile.write(block)
        self.close_connection = True

    def _stream(self, model, seconds):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        events = max(2, int(seconds * 4))
        self.wfile.write(b'event: message_start\ndata: {"type": "message_start", "message": {"model": '
                         + json.dumps(model).encode() + b'}}\n\n')
        self.wfile.flush()
        for _ in range(events):
            time.sleep(seconds / events)
            self.wfile.write(b'event: content_block_delta\ndata: {"type": "content_block_delta", '
                             b'"delta": {"type": "text_delta", "text": "x"}}\n\n')
            self.wfile.flush()
        self.wfile.write(b'event: message_stop\ndata: {"type": "message_stop"}\n\n')
        self.wfile.flush()

    def do_POST(self):
        self._hang_if_needed()
        length = int(self.headers.get("Content-Length", "0") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        path = self.path.split("?", 1)[0]
        if path not in ("/v1/messages", "/v1/messages/count_tokens"):
            return self._send(404, {"error": "not found"})
        if not self._authorized():
            return self._send(401, {"error": {"message": "Authentication Error"}})
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return self._send(400, {"type": "error", "error": {"type": "invalid_request_error",
                                                               "message": "body must be a JSON object"}})
        model = body.get("model")
        if path.endswith("/count_tokens"):
            # LiteLLM 1.106.2 estimates locally (it never asks OpenRouter), for any model name
            return self._send(200, {"input_tokens": count_tokens(body), "litellm_count_source": "local_estimate"})
        if model not in State.models:
            return self._send(400, {"type": "error", "error": {
                "type": "invalid_request_error",
                "message": f"anthropic_messages: Invalid model name passed in model={model}. "
                           "Call `/v1/models` to view available models for your key."}})
        grow(State.mode)
        if body.get("stream"):
            return self._stream(model, float(body.get("stream_seconds") or 0))
        if body.get("delay_seconds"):
            time.sleep(float(body["delay_seconds"]))
        return self._send(200, {"id": "msg_fake", "type": "message", "role": "assistant", "model": model,
                                "content": [{"type": "text", "text": "fake reply"}], "stop_reason": "end_turn",
                                "usage": {"input_tokens": 1, "output_tokens": 2}})


HELD: List[bytearray] = []  # what a worker keeps per request in the ``grow_mb`` mode, as a leak would (at most ``grow_cap_mb``)


def grow(mode):
    """Keep ``grow_mb`` MB more, every page written so it counts (PSS and RSS), bounded by ``grow_cap_mb`` (256)."""
    held = sum(len(b) for b in HELD) / 1048576.0
    mb = min(float(mode.get("grow_mb") or 0), float(mode.get("grow_cap_mb", 256)) - held)
    if mb > 0:
        block = bytearray(int(mb * 1048576))
        block[::4096] = b"\x01" * len(range(0, len(block), 4096))
        with State.lock:
            HELD.append(block)


def count_tokens(body):
    """A rough local estimate, like LiteLLM's: about one token per four characters of text."""
    text = json.dumps(body.get("messages") or []) + json.dumps(body.get("system") or "")
    return max(1, len(text) // 4)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def service_actions(self):
        # runs in the main thread between polls: once hung, ignore SIGTERM for real, and block
        # the loop as a blocked event loop does (it accepts no connection any more)
        if State.hung:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            # from here no connection is accepted: what arrives waits in the socket's queue
            print(f"fake litellm pid={os.getpid()}: accepts nothing now", flush=True)
            while True:
                time.sleep(3600)

    def get_request(self):
        # The listening socket is non-blocking (see serve): the connection itself blocks as usual.
        conn, addr = self.socket.accept()
        conn.setblocking(True)
        return conn, addr

    def process_request_thread(self, request, client_address):
        with State.lock:
            State.inflight += 1
        try:
            super().process_request_thread(request, client_address)
        finally:
            with State.lock:
                State.inflight -= 1


def inherited_socket():
    """Return the listening socket supervisord hands over as fd 0 (``[fcgi-program]``), or None.

    Taken as the sidecar's launcher takes it: off fd 0, /dev/null there.
    """
    from sidecar_plugin.shell.litellm_launch.__main__ import listening_fd0

    fd = listening_fd0()
    return None if fd is None else socket.socket(fileno=fd)


def health_socket():
    """The tree's private health socket ``@$SIDECAR_HEALTH_SOCKET/<pid>``, made as the launcher makes it."""
    from sidecar_plugin.shell.litellm_launch.__main__ import health_socket as launchers

    return launchers()


def _server(sock):
    server = Server(("127.0.0.1", 0), Handler, bind_and_activate=False)
    server.socket.close()
    # Workers share the socket: when another worker wins a connection, a blocking accept would
    # wait for the next one, and a SIGTERM would never end the loop (no drain, killed at the deadline).
    sock.setblocking(False)
    server.socket = sock
    return server


def serve(sock, hang_after, ready=None, health=None):
    """Serve on ``sock`` until SIGTERM, then drain: in-flight requests finish, for up to the grace window."""
    server = _server(sock)
    if health is not None:  # the private health socket: served by the same process, hangs with it
        threading.Thread(target=_server(health).serve_forever, args=(0.2,), daemon=True).start()
    if hang_after is not None:
        def hang():
            time.sleep(float(hang_after))
            State.hung = True  # from now on SIGTERM is ignored and no request is answered
            print(f"fake litellm pid={os.getpid()}: hanging now", flush=True)
        threading.Thread(target=hang, daemon=True).start()

    def on_term(signum, frame):
        # Only set serve_forever's own flag: starting a thread here could deadlock on a lock
        # the interrupted main thread holds (it starts a thread per request).
        if not State.hung:
            server._BaseServer__shutdown_request = True

    signal.signal(signal.SIGTERM, on_term)
    if ready is not None:
        os.write(ready, b"r")
        os.close(ready)
    server.serve_forever(poll_interval=0.2)
    State.draining = True
    sock.close()  # no new connection from now on
    grace = float(os.environ.get("GRACEFUL_SHUTDOWN_TIMEOUT", "30"))
    deadline = time.monotonic() + grace
    while State.inflight and time.monotonic() < deadline:
        time.sleep(0.05)
    print(f"fake litellm pid={os.getpid()}: drained ({State.inflight} request(s) left)", flush=True)
    os._exit(0)


def validate(config_path):
    cfg, _ = load(config_path)
    refused = refused_models(cfg)
    if refused:
        print(f"LiteLLM: config validation failed: unknown model {refused[0]}", file=sys.stderr, flush=True)
        sys.exit(1)
    print(f"LiteLLM: config OK ({len(cfg.get('model_list') or [])} models)", flush=True)


class Workers:
    """The parent of several workers, as uvicorn's multiprocess supervisor."""

    def __init__(self, sock, config, count, hang_after, healthcheck, health=None):
        self.health = health
        self.sock, self.config, self.hang_after, self.healthcheck = sock, config, hang_after, healthcheck
        self.signals = []
        self.exiting = False
        self.procs = [self.spawn(i) for i in range(count)]

    def spawn(self, index):
        """Fork a worker; return (pid, fd that becomes readable once it serves or dies)."""
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGHUP, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            try:
                cfg, mode = configure(self.config)
                if index == 0 and mode.get("setsid_worker"):
                    os.setsid()
                if refused_models(cfg) or mode.get("exit_at_start"):
                    print(f"fake litellm worker pid={os.getpid()}: cannot load config", file=sys.stderr, flush=True)
                    os._exit(3)
                if mode.get("worker_start_delay"):
                    time.sleep(float(mode["worker_start_delay"]))
                print(f"fake litellm worker pid={os.getpid()} pgid={os.getpgid(0)}", flush=True)
                serve(self.sock, self.hang_after, ready=w, health=self.health)
            finally:
                os._exit(0)
        os.close(w)
        return pid, r

    def ready(self, fd, timeout):
        import select
        readable, _, _ = select.select([fd], [], [], timeout)
        ok = bool(readable) and os.read(fd, 1) == b"r"
        os.close(fd)
        return ok

    def reload(self):
        """Replace each worker: start the new one, wait until it serves, only then retire the old one."""
        print("fake litellm: SIGHUP, replacing workers", flush=True)
        for i, (old, fd) in enumerate(list(self.procs)):
            if fd is not None:
                os.close(fd)
            pid, rfd = self.spawn(i)
            if not self.ready(rfd, self.healthcheck):
                print(f"fake litellm: new worker {pid} not ready in time; keeping {old}, aborting", flush=True)
                _kill(pid, signal.SIGKILL)
                _wait(pid)
                self.procs[i] = (old, None)
                return
            _kill(old, signal.SIGTERM)
            _wait(old)
            self.procs[i] = (pid, None)

    def run(self):
        signal.signal(signal.SIGTERM, lambda s, f: self.signals.append("TERM"))
        signal.signal(signal.SIGINT, lambda s, f: self.signals.append("TERM"))
        signal.signal(signal.SIGHUP, lambda s, f: self.signals.append("HUP"))
        hang_at = None if self.hang_after is None else time.monotonic() + float(self.hang_after)
        while True:
            if hang_at is not None and time.monotonic() >= hang_at:
                State.hung = True
                hang_at = None
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            while self.signals:
                sig = self.signals.pop(0)
                if sig == "TERM":
                    self.stop()
                if sig == "HUP" and not State.hung:
                    self.reload()
            if not State.hung:
                self.respawn()
            time.sleep(0.2)

    def respawn(self):
        for i, (pid, fd) in enumerate(self.procs):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                print(f"fake litellm: worker {pid} died; starting another", flush=True)
                if fd is not None:
                    os.close(fd)
                self.procs[i] = self.spawn(i)
                print(f"fake litellm: started worker {self.procs[i][0]}", flush=True)
                if load(self.config)[1].get("die_after_respawn"):
                    os.kill(os.getpid(), signal.SIGKILL)
        try:
            os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            pass

    def stop(self):
        for pid, _ in self.procs:
            _kill(pid, signal.SIGTERM)
        for pid, _ in self.procs:
            _wait(pid)
        sys.exit(0)


def _kill(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait(pid):
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def main():
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=4000)
    p.add_argument("--num_workers", type=int, default=1)
    p.add_argument("--timeout_worker_healthcheck", type=float, default=5.0)
    p.add_argument("--validate_config", action="store_true")
    a, _ = p.parse_known_args()
    if a.validate_config:
        return validate(a.config)
    cfg, mode = configure(a.config)
    start = count_start(a.config)
    print(f"fake litellm: starting pid={os.getpid()} pgid={os.getpgid(0)} start={start}", flush=True)
    if mode.get("print_secrets"):
        keys = [(e.get("litellm_params") or {}).get("api_key") or "" for e in cfg.get("model_list") or []]
        shown = " ".join(f"api_key={k}" for k in keys) or "api_key="
        print(f"fake litellm: {shown} master_key={State.master_key}", flush=True)
        print(f"fake litellm: Authorization: Bearer {State.master_key}", file=sys.stderr, flush=True)
    refused = refused_models(cfg)
    if refused:
        print(f"fake litellm: cannot load config: unknown model {refused[0]}", file=sys.stderr, flush=True)
        sys.exit(1)
    if mode.get("exit_at_start") or start <= int(mode.get("fail_starts") or 0):
        print("fake litellm: fatal startup error", file=sys.stderr, flush=True)
        sys.exit(1)
    if mode.get("stop_delay"):
        signal.signal(signal.SIGTERM, lambda s, f: (time.sleep(float(mode["stop_delay"])), sys.exit(0)))
    slow = "slow_starts" not in mode or start <= int(mode["slow_starts"])
    if mode.get("start_delay") and slow:
        time.sleep(float(mode["start_delay"]))
    if mode.get("start_burn") and slow:
        burn_until = time.monotonic() + float(mode["start_burn"])
        while time.monotonic() < burn_until:
            sum(i * i for i in range(10000))
    if mode.get("start_stall"):
        while True:
            time.sleep(3600)
    inherited = inherited_socket()
    if inherited is None and os.environ.get("SIDECAR_HEALTH_SOCKET"):
        from sidecar_plugin.shell.litellm_launch.__main__ import NO_SOCKET

        sys.exit(NO_SOCKET)  # rendered as [fcgi-program]: supervisord could not listen on the port
    sock = inherited or bind(a.host, a.port, mode.get("elsewhere_if_busy"))
    health = health_socket()
    print(f"fake litellm: listening on http://{a.host}:{a.port} workers={a.num_workers} pid={os.getpid()}"
          f"{' (socket from supervisord)' if inherited else ''}", flush=True)
    hang_after = mode.get("hang_after")
    if a.num_workers <= 1:
        serve(sock, hang_after, health=health)
        return
    Workers(sock, a.config, a.num_workers, hang_after, a.timeout_worker_healthcheck, health).run()


def bind(host, port, elsewhere_if_busy=False):
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        try:
            sock.bind((host, port))
        except OSError:
            if not elsewhere_if_busy:
                raise
            sock.bind((host, 0))  # as LiteLLM's CLI does on port 4000
    except OSError as exc:
        print(f"ERROR: [Errno {exc.errno}] error while attempting to bind on address "
              f"('{host}', {port}): {exc.strerror.lower()}", file=sys.stderr, flush=True)
        sys.exit(1)
    sock.listen(128)
    return sock


if __name__ == "__main__":
    main()
