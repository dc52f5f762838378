"""One HTTP health probe of the sidecar, straight to it, never through a proxy.

A raw socket rather than an HTTP library, for three reasons: no proxy named
in the environment can ever carry a loopback probe (an ``HTTP_PROXY`` in
supervisord's environment would otherwise reach a proxy that may be dead, or
answer for a dead sidecar); the probe has one *overall* deadline (a library's
timeout is per read, so an answer trickling a byte every half second never
times out); and it reads at most ``MAX_ANSWER`` bytes (an endless ``200`` body
must not grow the listener). Each probe opens a fresh connection: a kept-alive
connection to one worker says nothing about whether the port accepts.
"""

from __future__ import annotations

import collections
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import List, Optional, Tuple

LIVELINESS_PATH = "/health/liveliness"
# LiteLLM's liveliness answer is a dozen bytes; anything past this is not a health answer.
MAX_ANSWER = 64 * 1024


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    started_at: float
    latency_ms: float
    detail: str
    peer: Optional[int] = None  # the pid that listens on the private health socket probed


def health_url(host: str, port: int) -> str:
    """Return the liveliness URL; an IPv6 literal needs brackets, a wildcard bind is probed on loopback."""
    host = _probe_host(host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}{LIVELINESS_PATH}"


def _probe_host(host: str) -> str:
    host = host.strip("[]")
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def _split(url: str) -> Tuple[str, int, str]:
    rest = url.split("://", 1)[1]
    netloc, _, path = rest.partition("/")
    if netloc.startswith("["):
        host, _, port = netloc[1:].partition("]:")
    else:
        host, _, port = netloc.rpartition(":")
    return host, int(port), "/" + path


class Prober:
    """Probes one URL; each call is independent, so several may run at once in different threads."""

    def __init__(self, url: str, max_answer: int = MAX_ANSWER, private: str = "") -> None:
        self.url = url
        # "@PREFIX": probe the tree's private health socket @PREFIX/<pid> instead of the port
        # (supervisord owns the port, which an older tree's draining worker may answer)
        self.private = private
        self.host, self.port, self.path = _split(url)
        self.max_answer = max_answer
        # the local ports of recent probes: their connections are no sign that the sidecar serves others
        self.local_ports: "collections.deque[int]" = collections.deque(maxlen=512)
        self.lock = threading.Lock()

    def recent_ports(self) -> "frozenset[int]":
        """The local ports of the last probes (probes run in several threads at once)."""
        with self.lock:
            return frozenset(self.local_ports)

    def probe(self, timeout: float, pid: Optional[int] = None) -> ProbeResult:
        """Probe once; the whole exchange (connect, send, read the answer) ends within ``timeout`` seconds.

        With a private socket, ``pid`` is the tree's root (the one supervisord runs).
        """
        started = time.time()
        t0 = time.monotonic()
        peer: List[int] = []
        try:
            if self.private and not pid:
                raise ConnectionRefusedError()
            ok, detail = self._exchange(t0 + timeout, timeout, pid, peer)
        except socket.timeout:
            ok, detail = False, f"no complete answer within {timeout:g} s"
        except ConnectionRefusedError:
            ok, detail = False, "connection refused"
        except ConnectionResetError:
            ok, detail = False, "connection reset"
        except OSError as exc:
            ok, detail = False, f"connection failed ({exc.strerror or type(exc).__name__})"
        latency = (time.monotonic() - t0) * 1000.0
        return ProbeResult(ok=ok, started_at=started, latency_ms=round(latency, 2), detail=detail,
                           peer=peer[0] if peer else None)

    def _connect(self, timeout: float, pid: Optional[int], peer: List[int]) -> socket.socket:
        """Connect to the port, or to the tree's private socket (then ``peer`` gets who listens on it)."""
        if not self.private:
            return socket.create_connection((self.host, self.port), timeout=timeout)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(f"\0{self.private}/{pid}")
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            peer.append(struct.unpack("3i", creds)[0])
        except OSError:
            sock.close()
            raise
        return sock

    def _exchange(self, deadline: float, timeout: float, pid: Optional[int] = None,
                  peer: Optional[List[int]] = None) -> Tuple[bool, str]:
        def left() -> float:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise socket.timeout()
            return remaining

        with self._connect(left(), pid, [] if peer is None else peer) as sock:
            if not self.private:
                with self.lock:
                    self.local_ports.append(sock.getsockname()[1])
            host = f"[{self.host}]" if ":" in self.host else self.host
            request = (f"GET {self.path} HTTP/1.1\r\nHost: {host}:{self.port}\r\n"
                       "Connection: close\r\nAccept: */*\r\n\r\n").encode("ascii")
            sock.settimeout(left())
            sock.sendall(request)
            data = b""
            while True:
                sock.settimeout(left())
                chunk = sock.recv(min(65536, self.max_answer + 1 - len(data)))
                if not chunk:
                    break
                data += chunk
                if len(data) > self.max_answer:
                    return False, f"answer larger than {self.max_answer} bytes"
                if _complete(data):
                    break
        return _judge(data)

    def close(self) -> None:
        """Nothing to release: every probe has its own connection."""


def _header_end(data: bytes) -> int:
    return data.find(b"\r\n\r\n")


def _complete(data: bytes) -> bool:
    """Whether ``data`` holds a whole HTTP answer (the server may keep the connection open after it)."""
    end = _header_end(data)
    if end < 0:
        return False
    length, chunked = _framing(data[:end])
    body = data[end + 4:]
    if chunked:
        return body.endswith(b"0\r\n\r\n")
    if length is not None:
        return len(body) >= length
    return False  # read until the server closes


def _framing(head: bytes) -> Tuple[Optional[int], bool]:
    length: Optional[int] = None
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            try:
                length = int(value.strip())
            except ValueError:
                length = None
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    return length, chunked


def _judge(data: bytes) -> Tuple[bool, str]:
    end = _header_end(data)
    if end < 0:
        return False, "connection closed before a complete answer" if data else "connection closed without an answer"
    status_line = data[:data.find(b"\r\n")]
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return False, "not an HTTP answer"
    code = int(parts[1])
    length, chunked = _framing(data[:end])
    body = data[end + 4:]
    if (length is not None and len(body) < length) or (chunked and not body.endswith(b"0\r\n\r\n")):
        return False, f"HTTP {code}, body cut short"
    return code == 200, f"HTTP {code}"
