"""A bounded load generator for the gateway's view: short requests and streams, counted by outcome.

Only to 127.0.0.1, bounded in count and time. Each request opens its own
connection (the gateway's pool would hide a refused connect behind a retry).
Outcomes: ``ok``; ``refused`` (the connect was refused: nobody listened);
``failed`` (an error answer or a broken exchange before any answer);
``cut`` (a stream that began but ended without ``message_stop``).
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from typing import Dict, List, Optional, Sequence

STREAM_END = b"message_stop"


def one_request(port: int, key: str, model: str, stream_seconds: float = 0.0, timeout: float = 120.0,
                upstream_stream: bool = False) -> str:
    """Send one /v1/messages request; return its outcome."""
    # max_tokens sets a slow upstream's stream length (FakeOpenRouter(seconds_per_token=0.1))
    body: Dict[str, object] = {"model": model, "max_tokens": max(16, int(stream_seconds * 10)),
                               "messages": [{"role": "user", "content": "ping"}]}
    streaming = stream_seconds > 0 or upstream_stream
    if streaming:
        body["stream"] = True
        body["stream_seconds"] = stream_seconds  # the stand-in's knob; the real LiteLLM ignores it
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        try:
            conn.connect()
        except ConnectionRefusedError:
            return "refused"
        conn.request("POST", "/v1/messages", json.dumps(body),
                     {"x-api-key": key, "anthropic-version": "2023-06-01", "content-type": "application/json",
                      "Connection": "close"})
        resp = conn.getresponse()
        if resp.status != 200:
            resp.read(65536)
            return "failed"
        if not streaming:
            resp.read(1 << 20)
            return "ok"
        seen = b""
        try:
            while True:
                chunk = resp.read1(65536) if hasattr(resp, "read1") else resp.read(1024)
                if not chunk:
                    break
                seen = (seen + chunk)[-4096:]
                if STREAM_END in seen:
                    return "ok"
        except (OSError, http.client.HTTPException):
            return "cut"
        return "cut"
    except ConnectionRefusedError:
        return "refused"
    except (OSError, http.client.HTTPException):
        return "failed"
    finally:
        conn.close()


class Traffic:
    """Short requests at ``rate`` per second plus streams of the given durations, until stopped."""

    def __init__(self, port: int, key: str, model: str, rate: float = 5.0,
                 streams: Sequence[float] = (), max_requests: int = 5000, upstream_stream: bool = False) -> None:
        self.port, self.key, self.model = port, key, model
        self.rate = rate
        self.streams = list(streams)
        self.max_requests = max_requests
        self.upstream_stream = upstream_stream
        self.short: Counter = Counter()
        self.stream_outcomes: Dict[float, str] = {}
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.threads: List[threading.Thread] = []
        self.sent = 0
        self.longest = 0.0  # the longest a short request took (waiting in the queue included)
        self.inflight: Dict[int, float] = {}  # thread -> when its short request was sent
        self.timeout = 60.0

    def _record(self, outcome: str, took: float = 0.0) -> None:
        with self.lock:
            self.short[outcome] += 1
            self.longest = max(self.longest, took)

    def _timed(self) -> None:
        t0, me = time.monotonic(), threading.get_ident()
        with self.lock:
            self.inflight[me] = t0
        out = one_request(self.port, self.key, self.model, timeout=self.timeout)
        with self.lock:
            if self.inflight.pop(me, None) is None:
                return  # counted as pending when the traffic stopped
        self._record(out, time.monotonic() - t0)

    def _stream(self, seconds: float) -> None:
        out = one_request(self.port, self.key, self.model, stream_seconds=seconds,
                          upstream_stream=self.upstream_stream, timeout=seconds + 120)
        with self.lock:
            self.stream_outcomes[seconds] = out

    def _short_loop(self) -> None:
        if self.rate <= 0:
            return
        every = 1.0 / self.rate
        nxt = time.monotonic()
        workers: List[threading.Thread] = []
        while not self.stop_event.is_set() and self.sent < self.max_requests:
            t = threading.Thread(target=self._timed, daemon=True)
            t.start()
            workers.append(t)
            self.sent += 1
            nxt += every
            self.stop_event.wait(max(0.0, nxt - time.monotonic()))
        for t in workers:
            t.join(timeout=90)

    def start(self) -> "Traffic":
        for seconds in self.streams:
            t = threading.Thread(target=self._stream, args=(seconds,), daemon=True)
            t.start()
            self.threads.append(t)
        t = threading.Thread(target=self._short_loop, daemon=True)
        t.start()
        self.threads.append(t)
        return self

    def stop(self, wait_streams: float = 180.0) -> "Traffic":
        """Stop sending short requests; wait for every request and stream to end (bounded)."""
        self.stop_event.set()
        deadline = time.monotonic() + wait_streams
        for t in self.threads:
            t.join(timeout=max(0.1, deadline - time.monotonic()))
        with self.lock:  # still unanswered: pending (a loss), and its wait so far counts in the longest
            now = time.monotonic()
            for t0 in self.inflight.values():
                self.short["pending"] += 1
                self.longest = max(self.longest, now - t0)
            self.inflight.clear()
        return self

    @property
    def lost(self) -> int:
        """Short requests refused, failed or unanswered when the traffic stopped, plus streams cut or failed."""
        return (self.short["refused"] + self.short["failed"] + self.short["pending"]
                + sum(1 for o in self.stream_outcomes.values() if o != "ok"))

    def summary(self) -> str:
        streams = ", ".join(f"{s:g}s={o}" for s, o in sorted(self.stream_outcomes.items()))
        return f"short {dict(self.short)}, longest {self.longest:.2f} s; streams {streams or 'none'}"


def wait_answering(port: int, key: str, model: str, timeout: float = 60.0) -> Optional[str]:
    """Poll until one request is answered; return the last outcome."""
    deadline = time.monotonic() + timeout
    out = None
    while time.monotonic() < deadline:
        out = one_request(port, key, model, timeout=10)
        if out == "ok":
            return out
        time.sleep(0.2)
    return out
