"""Tell a hung worker from a busy one: its event loop beats into memory the launcher shares.

uvicorn's own check pings each worker from a thread, which answers while the
loop is blocked, and the listener's probes are answered by its siblings (a
blocked loop accepts nothing), so nothing else sees a worker whose loop
hangs. Each worker's loop beats once a second (uvicorn's ``callback_notify``,
run by the loop itself) into shared memory (the workers are forked). A
serving worker (not draining) whose beat and CPU time both stood still for
``SIDECAR_WORKER_HANG_WINDOW`` seconds (default 20, the listener's hang
window) is hung: blocked, not busy. A lazy import on a starved host blocks a
loop for a while, burning CPU: that worker is slow, and killing it would only
lose its requests. ``worker_replace`` replaces a hung worker alone. A loop
that spins forever burning CPU is not told from a busy one. The same shared
memory says when a worker served its requests (``--max_requests_before_restart``,
taken from uvicorn: ``recycling``), so that ``worker_replace`` replaces it, a
new worker serving first, instead of uvicorn ending it. Imports nothing of
sidecar_plugin.
"""

import multiprocessing
import os
import random
import time
from typing import Any, Awaitable, Callable, List, Optional

HANG_WINDOW = 20.0  # the listener's default --hang-window
BEAT_EVERY = 1.0
WORK = 0.5  # CPU seconds that say a worker works (its ping thread alone uses far less in a window)
BEAT: List[Any] = []  # in a worker: its shared beat (seconds on the monotonic clock; -1 once it drains)
# the request limit (--max_requests_before_restart) and its jitter, taken from uvicorn (``recycled_by_launcher``):
# a worker that served its requests says so in ``spent`` and serves on until the launcher has replaced it
RECYCLE: List[int] = []
ALONE = 120.0  # seconds a spent worker waits for its replacement before it exits as uvicorn would have

try:
    from uvicorn.supervisors import multiprocess as _multiprocess
    from uvicorn.supervisors.multiprocess import Process
except ImportError:  # another uvicorn: no watch
    Process = None


def hang_window() -> float:
    value = os.environ.get("SIDECAR_WORKER_HANG_WINDOW", "")
    try:
        return float(value) if float(value) > 0 else HANG_WINDOW
    except ValueError:
        return HANG_WINDOW


async def _beat() -> None:
    if BEAT:
        BEAT[0].value = time.monotonic()


if Process is not None:
    class Beating(Process):
        """A uvicorn worker whose event loop beats into memory shared with the launcher (forked: inherited)."""

        def __init__(self, config: Any, sockets: List[Any]) -> None:
            self.beat = multiprocessing.RawValue("d", 0.0)  # 0: not serving yet (uvicorn's start check covers it)
            self.spent = multiprocessing.RawValue("d", 0.0)  # when it served its requests (0: not yet)
            super().__init__(config, sockets)

        def target(self, sockets: Optional[List[Any]] = None) -> None:
            BEAT[:] = [self.beat]
            from uvicorn.server import Server

            shutdown = Server.shutdown

            async def draining(server: Any, sockets: Optional[List[Any]] = None) -> None:
                self.beat.value = -1.0  # draining: its loop stops beating on purpose
                await shutdown(server, sockets)

            Server.shutdown = draining
            if RECYCLE:
                Server.on_tick = recycling(Server.on_tick, self.spent, RECYCLE[0] + random.randint(0, RECYCLE[1]))
            super().target(sockets)

        cpu = (-1.0, 0.0)  # (its CPU seconds when last seen working, when)

        def hung(self, now: float, window: float) -> bool:
            """Serving, and neither a beat nor work (``WORK`` CPU seconds) for ``window`` seconds."""
            used = cpu_seconds(self.pid)
            if used is None or used - self.cpu[0] >= WORK or self.cpu[0] < 0:
                self.cpu = (used if used is not None else self.cpu[0], now)
            return self.beat.value > 0 and now - self.beat.value > window and now - self.cpu[1] > window


Tick = Callable[[Any, int], Awaitable[bool]]


def recycling(on_tick: Tick, spent: Any, limit: int) -> Tick:
    """uvicorn's tick, plus: past ``limit`` requests, mark the worker ``spent`` (the launcher then replaces it,
    the new worker serving before this one drains); if nobody has within ``ALONE`` seconds, exit as uvicorn
    does at its limit (its supervisor forks another)."""

    async def ticking(server: Any, counter: int) -> bool:
        if await on_tick(server, counter):
            return True
        if server.server_state.total_requests < limit:
            return False
        now = time.monotonic()
        if not spent.value:
            spent.value = now
            print("sidecar launcher: worker %d served its %d requests: replaced once a new one serves"
                  % (os.getpid(), limit), flush=True)
        elif now - spent.value > ALONE:
            print("sidecar launcher: worker %d not replaced within %.0f s of its request limit: exiting"
                  % (os.getpid(), ALONE), flush=True)
            return True
        return False

    return ticking


def recycled_by_launcher(config: Any) -> None:
    """Take the request limit from uvicorn's workers (which exit at it, nothing replacing them until they
    are gone: with two workers spent at once, nobody accepted for a worker's start) and have each worker say
    when it reached its limit instead (``recycling``). Call after ``beating`` succeeded, before the fork."""
    from uvicorn.server import Server, ServerState

    shaped = hasattr(Server, "on_tick") and "total_requests" in vars(ServerState())
    if config.limit_max_requests and shaped:  # another uvicorn's tick: its own limit stays
        RECYCLE[:] = [config.limit_max_requests, getattr(config, "limit_max_requests_jitter", 0) or 0]
        config.limit_max_requests = None


def cpu_seconds(pid: int) -> Optional[float]:
    """CPU seconds ``pid`` used (user + system), from /proc; None when unreadable."""
    try:
        with open("/proc/%d/stat" % pid) as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def beating(config: Any, supported: bool) -> bool:
    """Make every worker uvicorn starts from now on beat from its loop; False where it cannot (not forked)."""
    import uvicorn._subprocess

    context = getattr(uvicorn._subprocess, "spawn", None)
    if not supported or getattr(context, "get_start_method", lambda: "")() != "fork":
        return False  # the beat lives in memory the workers inherit
    config.callback_notify = _beat
    config.timeout_notify = BEAT_EVERY
    _multiprocess.Process = Beating
    return True
