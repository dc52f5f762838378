#!/usr/bin/env python3
"""A stand-in for the ``litellm`` proxy: same flags, same process shape, no 7 s start.

Like uvicorn, the parent binds the port and, with ``--num_workers N`` > 1,
forks N workers that accept on the shared socket; the workers survive a
SIGKILL of the parent, keep the port and keep answering (the failure the
listener exists for). ``fake_mode.json`` beside the config (re-read at every
start) makes it misbehave: ``start_delay``, ``exit_at_start``,
``never_healthy``, ``hang_after``, ``setsid_worker``, ``print_secrets``.
It answers what the gateway sends: ``/v1/messages`` and
``/v1/messages/count_tokens`` behind the master key (``Authorization: Bearer``
or ``x-api-key``), an alias it does not serve with LiteLLM's 400.

Starts are counted in ``fake_starts`` beside it (the harness resets it with
the mode), so a later start can differ from the first: ``slow_starts: N``
makes only the first N starts take ``start_delay`` (a slow boot under load),
``fail_starts: N`` makes the first N starts exit at once (a fault that goes away).
A model id containing ``refuse-config`` makes it reject its config and exit,
as LiteLLM does with a config it cannot load (a broken change to roll back).
"""

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time
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
    models = []
    master_key = ""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

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
            return self._send(200, b'"I\'m alive!"')
        if self.path == "/v1/models":
            if not self._authorized():
                return self._send(401, {"error": {"message": "Authentication Error"}})
            return self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in State.models]})
        return self._send(404, {"error": "not found"})

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
        return self._send(200, {"id": "msg_fake", "type": "message", "role": "assistant", "model": model,
                                "content": [{"type": "text", "text": "fake reply"}], "stop_reason": "end_turn",
                                "usage": {"input_tokens": 1, "output_tokens": 2}})


def count_tokens(body):
    """A rough local estimate, like LiteLLM's: about one token per four characters of text."""
    text = json.dumps(body.get("messages") or []) + json.dumps(body.get("system") or "")
    return max(1, len(text) // 4)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def service_actions(self):
        # runs in the main thread between polls: once hung, ignore SIGTERM for real
        if State.hung and signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)


def serve(sock, hang_after):
    server = Server(sock.getsockname()[:2], Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    if hang_after is not None:
        def hang():
            time.sleep(float(hang_after))
            State.hung = True  # from now on SIGTERM is ignored and no request is answered
            print(f"fake litellm pid={os.getpid()}: hanging now", flush=True)
        threading.Thread(target=hang, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda signum, frame: None if State.hung else sys.exit(0))
    server.serve_forever(poll_interval=0.2)


def main():
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=4000)
    p.add_argument("--num_workers", type=int, default=1)
    a, _ = p.parse_known_args()
    cfg, mode = load(a.config)
    State.models = [e.get("model_name") for e in cfg.get("model_list") or []]
    State.master_key = (cfg.get("general_settings") or {}).get("master_key", "")
    State.never_healthy = bool(mode.get("never_healthy"))
    start = count_start(a.config)
    print(f"fake litellm: starting pid={os.getpid()} pgid={os.getpgid(0)} start={start}", flush=True)
    if mode.get("print_secrets"):
        keys = [(e.get("litellm_params") or {}).get("api_key") or "" for e in cfg.get("model_list") or []]
        shown = " ".join(f"api_key={k}" for k in keys) or "api_key="
        print(f"fake litellm: {shown} master_key={State.master_key}", flush=True)
        print(f"fake litellm: Authorization: Bearer {State.master_key}", file=sys.stderr, flush=True)
    refused = [(e.get("litellm_params") or {}).get("model") for e in cfg.get("model_list") or []
               if "refuse-config" in str((e.get("litellm_params") or {}).get("model"))]
    if refused:
        print(f"fake litellm: cannot load config: unknown model {refused[0]}", file=sys.stderr, flush=True)
        sys.exit(1)
    if mode.get("exit_at_start") or start <= int(mode.get("fail_starts") or 0):
        print("fake litellm: fatal startup error", file=sys.stderr, flush=True)
        sys.exit(1)
    if mode.get("start_delay") and ("slow_starts" not in mode or start <= int(mode["slow_starts"])):
        time.sleep(float(mode["start_delay"]))
    sock = socket.socket(socket.AF_INET6 if ":" in a.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((a.host, a.port))
    except OSError as exc:
        print(f"ERROR: [Errno {exc.errno}] error while attempting to bind on address "
              f"('{a.host}', {a.port}): {exc.strerror.lower()}", file=sys.stderr, flush=True)
        sys.exit(1)
    sock.listen(128)
    print(f"fake litellm: listening on http://{a.host}:{a.port} workers={a.num_workers} pid={os.getpid()}",
          flush=True)
    hang_after = mode.get("hang_after")
    if a.num_workers <= 1:
        serve(sock, hang_after)
        return
    workers = []

    def stop(signum, frame):
        for w in workers:
            try:
                os.kill(w, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for w in workers:
            try:
                os.waitpid(w, 0)
            except ChildProcessError:
                pass
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for i in range(a.num_workers):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            if i == 0 and mode.get("setsid_worker"):
                os.setsid()
            print(f"fake litellm worker pid={os.getpid()} pgid={os.getpgid(0)}", flush=True)
            try:
                serve(sock, hang_after)
            finally:
                os._exit(0)
        workers.append(pid)
    sock.close()
    hang_at = None if hang_after is None else time.monotonic() + float(hang_after)
    while True:
        if hang_at is not None and time.monotonic() >= hang_at:
            State.hung = True
            hang_at = None
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            os.waitpid(-1, os.WNOHANG)  # reap dead workers; no respawn
        except ChildProcessError:
            pass
        time.sleep(0.2)


if __name__ == "__main__":
    main()
