"""What the sidecar's process tree says about itself: stopped, CPU progress, its uvicorn workers.

Hang detection must not rest on answers alone (a busy sidecar answers
slowly): a main process stopped by SIGSTOP or a debugger cannot answer, and a
tree that uses no CPU at all while nothing answers makes no progress. The
workers' birth times tell which ``litellm.yaml`` they read: uvicorn replaces
its workers on SIGHUP while the main pid stays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, FrozenSet, Optional, Tuple

import time

import psutil

from sidecar_plugin.shell.processes.procs import connections_of, descendants

STOPPED = (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP)
# multiprocessing's helper processes are no workers: they are never replaced.
HELPERS = ("resource_tracker", "semaphore_tracker", "forkserver")


@dataclass(frozen=True)
class Signs:
    stopped: bool
    cpu: Optional[float]
    workers: Tuple[float, ...]


def _cpu(proc: psutil.Process, reaped: bool = False) -> float:
    t = proc.cpu_times()
    total = t.user + t.system
    if reaped:  # workers it has already waited for (a retired worker's CPU must not vanish)
        total += t.children_user + t.children_system
    return total


def _is_helper(proc: psutil.Process) -> bool:
    try:
        cmdline = " ".join(proc.cmdline())
    except (psutil.Error, OSError):
        return False
    return any(h in cmdline for h in HELPERS)


def clock_offset() -> float:
    """Return what to add to psutil's ``create_time`` to get this clock's time of birth.

    psutil counts from the boot time Linux gives in whole seconds, so its birth
    times run up to a second early; a worker born just after a config change
    would look born before it. /proc/uptime measures the same ticks precisely.
    """
    try:
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return time.time() - (psutil.boot_time() + uptime)


def connections(pid: int, port: int,
                exclude: FrozenSet[int] = frozenset()) -> Optional[FrozenSet[Tuple[int, int, Any]]]:
    """Return the tree's accepted TCP connections on ``port`` as (pid, fd, remote address); None if gone.

    Connections from a remote port in ``exclude`` (the listener's own probes) are left out.

    A connection that appears between two samples was accepted: the sidecar's
    event loop runs. A blocked one accepts nothing (connections wait in the
    kernel's backlog, owned by no process).
    """
    try:
        main = psutil.Process(pid)
        procs = [main] + descendants(main)
    except (psutil.Error, OSError):
        return None
    seen = set()
    for proc in procs:
        try:
            for c in connections_of(proc):
                if c.laddr and c.laddr.port == port and c.raddr and c.raddr.port not in exclude:
                    seen.add((proc.pid, c.fd, tuple(c.raddr)))
        except (psutil.Error, OSError):
            continue
    return frozenset(seen)


def sample(pid: int) -> Optional[Signs]:
    """Return the signs of ``pid``'s tree, or None when the process is gone."""
    try:
        main = psutil.Process(pid)
        stopped = main.status() in STOPPED
        cpu = _cpu(main, reaped=True)
        children = descendants(main)
        direct = descendants(main, recursive=False)
    except (psutil.Error, OSError):
        return None
    for child in children:
        try:
            cpu += _cpu(child)
        except (psutil.Error, OSError):
            pass
    born = []
    offset = clock_offset()
    for child in direct:
        try:
            if child.status() != psutil.STATUS_ZOMBIE and not _is_helper(child):
                born.append(round(child.create_time() + offset, 3))
        except (psutil.Error, OSError):
            pass
    return Signs(stopped=stopped, cpu=round(cpu, 3), workers=tuple(sorted(born)))
