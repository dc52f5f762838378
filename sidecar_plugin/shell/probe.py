"""One HTTP health probe of the sidecar, straight to it, never through a proxy.

``trust_env = False`` because an ``HTTP_PROXY`` in supervisord's environment
would otherwise carry loopback probes to a proxy that may be dead (or that
answers for a dead sidecar). Each probe opens a fresh connection: a kept-alive
connection to one worker says nothing about whether the port accepts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import requests

LIVELINESS_PATH = "/health/liveliness"


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    started_at: float
    latency_ms: float
    detail: str


def health_url(host: str, port: int) -> str:
    """Return the liveliness URL; an IPv6 literal needs brackets, a wildcard bind is probed on loopback."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}{LIVELINESS_PATH}"


class Prober:
    """Probes one URL; reuse one instance per thread (requests sessions are not thread-safe)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.headers["Connection"] = "close"

    def probe(self, timeout: float) -> ProbeResult:
        """Probe once, within ``timeout`` seconds for connect and for the answer."""
        started = time.time()
        t0 = time.monotonic()
        try:
            resp = self.session.get(self.url, timeout=(timeout, timeout), allow_redirects=False)
            ok = resp.status_code == 200
            detail = f"HTTP {resp.status_code}"
            resp.close()
        except requests.exceptions.Timeout:
            ok, detail = False, f"no answer within {timeout:g} s"
        except requests.exceptions.ConnectionError as exc:
            ok, detail = False, _connection_detail(exc)
        except requests.exceptions.RequestException as exc:
            ok, detail = False, type(exc).__name__
        latency = (time.monotonic() - t0) * 1000.0
        return ProbeResult(ok=ok, started_at=started, latency_ms=round(latency, 2), detail=detail)

    def close(self) -> None:
        self.session.close()


def _connection_detail(exc: Exception) -> str:
    text = str(exc)
    if "Connection refused" in text:
        return "connection refused"
    if "reset" in text.lower():
        return "connection reset"
    return "connection failed"
