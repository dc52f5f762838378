"""Never reset, at a worker's shutdown, a connection a request is on its way on (the launcher's uvicorn patch).

Imports nothing of sidecar_plugin (the launcher runs under LiteLLM's interpreter).
"""

import importlib
import os
from typing import Any, Callable, Dict, List

# Seconds a kept-alive connection may stay idle before the worker closes it (uvicorn's timeout_keep_alive;
# SIDECAR_KEEPALIVE_TIMEOUT): longer than the idle timeout of the gateway's Go transport (90 s), so the client,
# not the server, closes an idle connection: a close by the server crosses the client's next request on it
# now and then (Go retries no POST written on a reused connection). uvicorn's own default is 5 s.
KEEP_ALIVE = 95
# Seconds a kept-alive connection idle at a worker's shutdown stays open for its next request (answered with
# Connection: close), at most: the drain waits no longer for it than with uvicorn's default keep-alive.
DRAIN_IDLE = 5.0
# Seconds a connection that has not sent its request yet gets, at a worker's shutdown, to send it.
FRESH_GRACE = 1.0
# Seconds between two looks at an idle connection whose request may be arriving, before it is closed.
RECHECK = 0.05
DRAINING: List[Any] = []  # not empty once this worker's server began its shutdown


def keep_alive_timeout() -> int:
    """``SIDECAR_KEEPALIVE_TIMEOUT`` (whole seconds above 0), else ``KEEP_ALIVE``."""
    value = os.environ.get("SIDECAR_KEEPALIVE_TIMEOUT", "")
    return int(value) if value.isdigit() and int(value) > 0 else KEEP_ALIVE


def _unread(transport: Any) -> bool:
    """Whether bytes (a request) or the client's close wait on the connection, not yet read by the loop."""
    import select

    sock = transport.get_extra_info("socket")
    try:
        return bool(sock is not None and select.select([sock.fileno()], [], [], 0)[0])
    except (OSError, ValueError):
        return False


def drain_without_resets() -> None:
    """Never reset, at a worker's shutdown, a connection a request is on its way on.

    uvicorn's graceful shutdown closes at once every connection without a
    request in progress: one the kernel handed over a moment ago whose request
    is still on its way (Kludex/uvicorn#2757), and every kept-alive connection
    idle since its last response. A client that keeps connections alive (the
    gateway's Go transport) sends its next request on such a connection at any
    time; one that crosses the close is reset, and Go retries no POST written
    on a reused connection. So, from the shutdown on, every response says
    ``Connection: close`` (the connection ends after it, the client's pool
    drops it), an idle kept-alive connection stays open until its next request
    is answered or its keep-alive timeout closes it (``DRAIN_IDLE`` seconds
    from the shutdown at most), and a
    fresh one gets ``FRESH_GRACE`` seconds to send its request. A close (at
    shutdown or on the keep-alive timeout) waits while a request or the
    client's own close already waits unread on the connection: the loop reads
    it first. The residual: a request sent in the very instant its idle
    connection is closed, as with any HTTP/1.1 server that closes an idle
    connection.
    """
    names = (("h11_impl", "H11Protocol", "RequestResponseCycle"),
             ("httptools_impl", "HttpToolsProtocol", "RequestResponseCycle"))
    for module, protocol, cycle in names:
        try:
            mod = importlib.import_module("uvicorn.protocols.http." + module)
            _patch_protocol(getattr(mod, protocol))
            _patch_cycle(getattr(mod, cycle))
        except (ImportError, AttributeError):
            continue


def _patch_protocol(cls: Any) -> None:
    def close_idle(self: Any, _original: Callable[..., Any] = cls.shutdown) -> None:
        if self.transport.is_closing() or self.cycle is not None and not self.cycle.response_complete:
            return  # closed already, or a request came: its response says Connection: close and ends it
        if _unread(self.transport):
            self.loop.call_later(RECHECK, self._sidecar_close_idle)
            return
        _original(self)

    def shutdown(self: Any, _original: Callable[..., Any] = cls.shutdown) -> None:
        DRAINING[:] = [True]
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            _original(self)  # in progress: its response is the last one on this connection
        elif self.cycle is None or getattr(self, "timeout_keep_alive_task", None) is None:
            self.loop.call_later(FRESH_GRACE, self._sidecar_close_idle)  # fresh: its request may be on its way
        else:  # kept alive and idle: its keep-alive timeout closes it (DRAIN_IDLE at most), unless a request comes
            task = self.timeout_keep_alive_task
            if task.when() - self.loop.time() > DRAIN_IDLE:
                task.cancel()
                self.timeout_keep_alive_task = self.loop.call_later(DRAIN_IDLE, self.timeout_keep_alive_handler)

    def timeout_keep_alive_handler(self: Any, _original: Callable[..., Any] = cls.timeout_keep_alive_handler) -> None:
        if not self.transport.is_closing() and _unread(self.transport):
            self.timeout_keep_alive_task = self.loop.call_later(RECHECK, self.timeout_keep_alive_handler)
            return
        _original(self)

    cls._sidecar_close_idle = close_idle
    cls.shutdown = shutdown
    cls.timeout_keep_alive_handler = timeout_keep_alive_handler


def _patch_cycle(cls: Any) -> None:
    async def send(self: Any, message: Dict[str, Any], _original: Callable[..., Any] = cls.send) -> None:
        if DRAINING and message.get("type") == "http.response.start" and not self.response_started:
            self.keep_alive = False
            headers = list(message.get("headers", []))
            if not any(k.lower() == b"connection" for k, _ in headers):
                message = dict(message, headers=headers + [(b"connection", b"close")])
        await _original(self, message)

    cls.send = send
