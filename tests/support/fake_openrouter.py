#!/usr/bin/env python3
"""A loopback stand-in for OpenRouter's OpenAI-compatible API, recording what it receives.

The end-to-end suite points the profile's ``api_base`` here, so the whole
chain gateway -> LiteLLM -> upstream runs offline, and the test can check what
LiteLLM actually sent (the key as bearer, the model id without ``openrouter/``).

``seconds_per_token``: a streamed answer sends ``max_tokens`` content chunks,
one every that many seconds, so a load test keeps streams in flight for as
long as it asks (LiteLLM forwards ``max_tokens``; it drops unknown fields).

A model it cannot serve (any id under ``unavailable/``, as an OpenRouter model
with no provider up) is answered ``500`` with OpenAI's error shape, streamed
or not: an upstream failure, for the traffic metrics' failure counts.
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional

CHAT_PATHS = ("/api/v1/chat/completions", "/v1/chat/completions", "/chat/completions")
UNAVAILABLE = "unavailable/"  # a model id under this answers 500


def reasoning_asked(body: Dict[str, Any]) -> bool:
    """Whether a request asks for reasoning.

    LiteLLM turns Anthropic's ``thinking`` into ``reasoning_effort`` for most
    models and passes it through as ``thinking`` for Anthropic's own (the
    profile allows it); OpenRouter also takes ``reasoning: {...}``.
    """
    reasoning, thinking = body.get("reasoning"), body.get("thinking")
    return bool(body.get("reasoning_effort") or (isinstance(reasoning, dict) and reasoning)
                or (isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")))


def reasoning_text(model: str) -> str:
    """The reasoning the stand-in answers with, so a test can find it in the Anthropic reply."""
    return f"thinking about {model}"


class FakeOpenRouter:
    """Serve on 127.0.0.1 (port 0 = any) in a background thread."""

    def __init__(self, record_path: Optional[str] = None, port: int = 0, host: str = "127.0.0.1",
                 seconds_per_token: float = 0.0, keep_records: bool = True) -> None:
        self.record_path = record_path
        self.seconds_per_token = seconds_per_token
        self.keep_records = keep_records
        self.records: List[Dict[str, Any]] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if self.path.endswith("/models"):
                    return self._json(200, {"data": [{"id": "fake/model"}]})
                self._json(404, {"error": "not found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0") or 0)
                raw = self.rfile.read(length)
                path = self.path.split("?")[0]
                if path not in CHAT_PATHS:
                    return self._json(404, {"error": "not found"})
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    return self._json(400, {"error": "bad json"})
                model = body.get("model", "")
                stream = bool(body.get("stream"))
                owner.record({"path": path, "authorization": self.headers.get("Authorization", ""),
                              "model": model, "stream": stream, "body": body})
                if model.startswith(UNAVAILABLE):
                    return self._json(500, {"error": {"message": f"no endpoints found for {model}",
                                                      "type": "server_error", "code": 500}})
                thinks = reasoning_asked(body)
                if stream:
                    return self._stream(model, thinks,
                                        int(body.get("max_tokens") or body.get("max_completion_tokens") or 0))
                message = {"role": "assistant", "content": f"pong from {model}"}
                if thinks:
                    message["reasoning"] = reasoning_text(model)
                self._json(200, {
                    "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": model,
                    "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}})

            def _json(self, code: int, obj: Any) -> None:
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, model: str, thinks: bool = False, tokens: int = 0) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                        "model": model}
                slow = owner.seconds_per_token > 0
                middle = [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}] * (tokens if slow else 0)
                chunks = [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
                if thinks:  # OpenRouter streams its reasoning first, in ``delta.reasoning``
                    words = reasoning_text(model).split(" ")
                    chunks += [{"index": 0, "delta": {"content": "", "reasoning": w + (" " if i < len(words) - 1 else "")},
                                "finish_reason": None} for i, w in enumerate(words)]
                chunks += [
                    {"index": 0, "delta": {"content": "pong "}, "finish_reason": None},
                    *middle,
                    {"index": 0, "delta": {"content": f"from {model}"}, "finish_reason": None},
                    {"index": 0, "delta": {}, "finish_reason": "stop"},
                ]
                for i, choice in enumerate(chunks):
                    if slow and 1 < i < len(chunks) - 2:
                        time.sleep(owner.seconds_per_token)
                    event = dict(base, choices=[choice])
                    if i == len(chunks) - 1:
                        event["usage"] = {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
                    self.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                self.close_connection = True

        self.host = host
        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.thread: Optional[threading.Thread] = None

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/api/v1"

    def record(self, entry: Dict[str, Any]) -> None:
        if not self.keep_records:
            return
        with self.lock:
            self.records.append(entry)
            if self.record_path:
                with open(self.record_path, "a") as fh:
                    fh.write(json.dumps(entry) + "\n")

    def requests(self) -> List[Dict[str, Any]]:
        with self.lock:
            return list(self.records)

    def start(self) -> "FakeOpenRouter":
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def main() -> None:
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--record", default=None)
    p.add_argument("--seconds-per-token", type=float, default=0.0)
    a, _ = p.parse_known_args()
    fake = FakeOpenRouter(a.record, a.port, a.host, a.seconds_per_token, keep_records=a.record is not None)
    print(f"listening on http://{a.host}:{fake.port}", flush=True)
    try:
        fake.server.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
