"""A bounded load generator for the gateway's view: short requests and streams, counted by outcome.

Only to 127.0.0.1, bounded in count and time. By default each request opens
its own connection (the gateway's pool would hide a refused connect behind a
retry); with ``keepalive`` the short requests share a ``Pool`` of kept-alive
connections, as the gateway's Go transport does, so a worker that closes a
connection it served while a request is on its way to it is seen.
Outcomes: ``ok``; ``refused`` (the connect was refused: nobody listened);
``failed`` (an error answer or a broken exchange before any answer);
``cut`` (a stream that began but ended without ``message_stop``).
"""

from __future__ import annotations

import http.client
import json
import select
import threading
import time
from collections import Counter
from typing import Dict, List, Optional, Sequence

STREAM_END = b"message_stop"


class Pool:
    """Idle kept-alive connections, reused last-in first-out, as Go's ``http.Transport`` keeps them.

    A connection whose peer already closed it (readable while idle: its FIN
    arrived) is dropped before reuse, as Go's read loop and urllib3 both
    notice; what stays a failure is a close that crosses a request on its way:
    Go retries no POST whose request was written on a reused connection.
    ``reused_failed`` counts those.
    """

    def __init__(self, port: int, timeout: float, max_idle: int = 4) -> None:
        self.port, self.timeout, self.max_idle = port, timeout, max_idle
        self.idle: List[http.client.HTTPConnection] = []
        self.lock = threading.Lock()
        self.reused = self.reused_failed = self.dropped_idle = 0

    def take(self) -> "tuple[http.client.HTTPConnection, bool]":
        with self.lock:
            while self.idle:
                conn = self.idle.pop()
                if conn.sock is not None and not select.select([conn.sock], [], [], 0)[0]:
                    self.reused += 1
                    return conn, True
                self.dropped_idle += 1
                conn.close()
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout), False

    def give_back(self, conn: http.client.HTTPConnection) -> None:
        with self.lock:
            if len(self.idle) < self.max_idle:
                self.idle.append(conn)
                return
        conn.close()

    def failed_reused(self) -> None:
        with self.lock:
            self.reused_failed += 1

    def close(self) -> None:
        with self.lock:
            idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()


def one_request(port: int, key: str, model: str, stream_seconds: float = 0.0, timeout: float = 120.0,
                upstream_stream: bool = False, pool: Optional[Pool] = None) -> str:
    """Send one /v1/messages request (on a connection of ``pool``, kept alive, if given); return its outcome."""
    # max_tokens sets a slow upstream's stream length (FakeOpenRouter(seconds_per_token=0.1))
    body: Dict[str, object] = {"model": model, "max_tokens": max(16, int(stream_seconds * 10)),
                               "messages": [{"role": "user", "content": "ping"}]}
    streaming = stream_seconds > 0 or upstream_stream
    if streaming:
        body["stream"] = True
        body["stream_seconds"] = stream_seconds  # the stand-in's knob; the real LiteLLM ignores it
    conn, reused = pool.take() if pool is not None else (
        http.client.HTTPConnection("127.0.0.1", port, timeout=timeout), False)
    keep = False
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01", "content-type": "application/json"}
    if pool is None:
        headers["Connection"] = "close"
    try:
        if conn.sock is None:
            try:
                conn.connect()
            except ConnectionRefusedError:
                return "refused"
        try:
            conn.request("POST", "/v1/messages", json.dumps(body), headers)
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException):
            if reused and pool is not None:
                pool.failed_reused()
            raise
        if resp.status != 200:
            resp.read(65536)
            return "failed"
        if not streaming:
            resp.read(1 << 20)
            keep = pool is not None and not resp.will_close
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
        if keep and pool is not None:
            pool.give_back(conn)
        else:
            conn.close()


class Traffic:
    """Short requests at ``rate`` per second plus streams of the given durations, until stopped."""

    def __init__(self, port: int, key: str, model: str, rate: float = 5.0,
                 streams: Sequence[float] = (), max_requests: int = 5000, upstream_stream: bool = False,
                 keepalive: bool = False) -> None:
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
        self.pool = Pool(port, self.timeout) if keepalive else None
        self.took: List["tuple[float, float, str]"] = []  # (sent at, took, outcome) of every short request ended

    def _record(self, outcome: str, took: float = 0.0, sent: float = 0.0) -> None:
        with self.lock:
            self.short[outcome] += 1
            self.longest = max(self.longest, took)
            self.took.append((sent, took, outcome))

    def longest_between(self, start: float, end: float = float("inf")) -> float:
        """The longest a short request sent between two ``time.monotonic()`` instants took."""
        with self.lock:
            return max((took for sent, took, _ in self.took if start <= sent < end), default=0.0)

    def failures(self) -> List["tuple[float, float, str]"]:
        """(sent at, took, outcome) of every short request that did not end ``ok``."""
        with self.lock:
            return [t for t in self.took if t[2] != "ok"]

    def _timed(self) -> None:
        t0, me = time.monotonic(), threading.get_ident()
        with self.lock:
            self.inflight[me] = t0
        out = one_request(self.port, self.key, self.model, timeout=self.timeout, pool=self.pool)
        with self.lock:
            if self.inflight.pop(me, None) is None:
                return  # counted as pending when the traffic stopped
        self._record(out, time.monotonic() - t0, t0)

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
        if self.pool is not None:
            self.pool.close()
        return self

    @property
    def lost(self) -> int:
        """Short requests refused, failed or unanswered when the traffic stopped, plus streams cut or failed."""
        return (self.short["refused"] + self.short["failed"] + self.short["pending"]
                + sum(1 for o in self.stream_outcomes.values() if o != "ok"))

    def summary(self) -> str:
        streams = ", ".join(f"{s:g}s={o}" for s, o in sorted(self.stream_outcomes.items()))
        pooled = "" if self.pool is None else (f"; pool: {self.pool.reused} reused, {self.pool.reused_failed} failed"
                                               f" on a reused connection, {self.pool.dropped_idle} closed while idle")
        return f"short {dict(self.short)}, longest {self.longest:.2f} s; streams {streams or 'none'}{pooled}"


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


class Hammer:
    """``clients`` threads sending short requests back to back over one ``Pool``: many kept-alive connections,
    spread over every worker, each reused within milliseconds (the gateway under a burst of turns)."""

    def __init__(self, port: int, key: str, model: str, clients: int = 6, pause: float = 0.01,
                 max_requests: int = 100000) -> None:
        self.port, self.key, self.model = port, key, model
        self.clients, self.pause, self.max_requests = clients, pause, max_requests
        self.pool = Pool(port, 60.0, max_idle=clients)
        self.outcomes: Counter = Counter()
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.threads: List[threading.Thread] = []

    def _client(self) -> None:
        while not self.stop_event.is_set() and sum(self.outcomes.values()) < self.max_requests:
            out = one_request(self.port, self.key, self.model, timeout=60, pool=self.pool)
            with self.lock:
                self.outcomes[out] += 1
            self.stop_event.wait(self.pause)

    def start(self) -> "Hammer":
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(self.clients)]
        for t in self.threads:
            t.start()
        return self

    def stop(self) -> "Hammer":
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=90)
        self.pool.close()
        return self

    def summary(self) -> str:
        return (f"{dict(self.outcomes)}; pool: {self.pool.reused} reused, {self.pool.reused_failed} failed on a "
                f"reused connection, {self.pool.dropped_idle} closed while idle")
