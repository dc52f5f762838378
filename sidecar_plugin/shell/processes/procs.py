"""Facts about processes and ports, read from the kernel (psutil, /proc): who lives, who listens.

The reaper, the listener's identity check and the client ask the same
questions: is this process still running (a zombie is not), which processes
descend from a pid, who listens on a port, when was a process born. The
answers live here, one place each, so they agree.

Birth times are measured on the boot clock (``born_at``): psutil's create
times are only as exact as its whole-second boot time, which moves with every
step of the wall clock.
"""

from __future__ import annotations

import errno
import os
import time
from functools import lru_cache
from typing import Any, Iterable, List, Optional, Set

import psutil

# psutil's create times are boot time + start ticks, and its boot time (``btime``) is
# a whole second that moves with every step of the wall clock: on a test host they
# were 0.7 s early, so a sidecar born 24 ms after an exit looked born before it.
# ``born_at`` measures a process's age on the boot clock instead (exact to a tick);
# this slack covers the tick and reading the two clocks a moment apart.
BORN_SLACK = 0.05


def born_at(proc: psutil.Process) -> float:
    """Return when ``proc`` started, on the wall clock, from its age on the boot clock.

    Unlike ``create_time()`` this does not depend on the kernel's whole-second
    boot time; it falls back to ``create_time()`` where /proc says otherwise.
    """
    try:
        with open(f"/proc/{proc.pid}/stat", "rb") as fh:
            stat = fh.read()
        ticks = int(stat[stat.rindex(b")") + 2:].split()[19])
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / _CLOCK_TICKS
        return time.time() - age
    except (OSError, ValueError, IndexError, AttributeError):
        return proc.create_time()


try:
    _CLOCK_TICKS = float(os.sysconf("SC_CLK_TCK"))
except (ValueError, OSError, AttributeError):
    _CLOCK_TICKS = 100.0


def born_before(proc: psutil.Process, moment: float) -> bool:
    """Whether ``proc`` surely started before ``moment`` (a process born after an exit is never its orphan)."""
    try:
        return born_at(proc) < moment - BORN_SLACK
    except psutil.Error:
        return False


def processes(identities: Iterable[Any]) -> List[psutil.Process]:
    """Return the processes of recorded ``[pid, create_time]`` pairs that still exist.

    A pid whose create time differs is another process that reused the number.
    """
    found = []
    for item in identities:
        try:
            proc = psutil.Process(int(item[0]))
            if abs(proc.create_time() - float(item[1])) < 0.01:
                found.append(proc)
        except (psutil.Error, ValueError, TypeError, IndexError, KeyError):
            continue
    return found


def alive(proc: psutil.Process) -> bool:
    """Whether ``proc`` still runs (a zombie holds no port and serves nothing)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def wait_gone(procs: List[psutil.Process], timeout: float) -> List[psutil.Process]:
    """Wait until each process is gone or a zombie (an orphan's zombie may never be
    collected by its new parent, and holds neither port nor memory); return the rest."""
    deadline = time.monotonic() + timeout
    left = [p for p in procs if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.01)
        left = [p for p in left if alive(p)]
    return left


def tree_pids(pid: Optional[int]) -> Set[int]:
    """Return ``pid`` and its descendants now (empty when it is gone or ``None``)."""
    if pid is None:
        return set()
    try:
        return {pid} | {p.pid for p in descendants(psutil.Process(pid))}
    except psutil.Error:
        return set()


def descendants(proc: psutil.Process, recursive: bool = True) -> List[psutil.Process]:
    """``proc``'s children (all its descendants if ``recursive``), read from the kernel's list of each task's children.

    psutil's ``children()`` reads the parent of every process of the host (one
    /proc/PID/stat each): the listener asks several times a second, so on a
    host of a few hundred processes that scan was most of its CPU (1.6 % of a
    core while idle), and it grows with the host. The kernel's own lists
    (/proc/PID/task/TID/children) cost a read per task of the tree, and are
    readable for one's own processes under ``hidepid`` too, where psutil's
    scan fails when the listener runs as the sidecar's user. A kernel without
    them (``CONFIG_PROC_CHILDREN``) gets psutil's scan.
    """
    if not _kernel_lists_children():
        return proc.children(recursive=recursive)
    found = []
    for pid in sorted(_task_tree(proc.pid, recursive) - {proc.pid}):
        try:
            found.append(psutil.Process(pid))
        except psutil.Error:
            continue
    return found


@lru_cache(maxsize=1)
def _kernel_lists_children() -> bool:
    """Whether this kernel lists each task's children (asked once)."""
    return os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")


def _task_tree(pid: int, recursive: bool) -> Set[int]:
    """``pid`` and its children (all descendants if ``recursive``) from /proc/PID/task/TID/children."""
    seen: Set[int] = set()
    todo = [pid]
    while todo:
        here = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{here}/task")
        except OSError:
            continue
        seen.add(here)
        for tid in tasks:
            try:
                with open(f"/proc/{here}/task/{tid}/children") as fh:
                    kids = [int(kid) for kid in fh.read().split()]
            except (OSError, ValueError):
                continue
            if recursive:
                todo += [kid for kid in kids if kid not in seen]
            else:
                seen.update(kids)
    return seen


def trees(roots: Iterable[int]) -> Set[int]:
    """Return the pids of every root's tree, each root read in turn."""
    pids: Set[int] = set()
    for root in roots:
        pids |= tree_pids(root)
    return pids


def connections_of(proc: psutil.Process, kind: str = "tcp") -> List[Any]:
    """Return ``proc``'s sockets of ``kind``: psutil's one API the package uses that moved since the
    oldest psutil it admits (5.9.4, Debian 12's names it ``connections``; 6.0 renamed it
    ``net_connections`` and deprecates the old name)."""
    method = getattr(proc, "net_connections", None) or proc.connections
    return method(kind=kind)


def port_holders(port: int) -> Set[int]:
    """Return the pids listening on TCP ``port`` (those this user may see)."""
    pids: Set[int] = set()
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return pids
    for c in conns:
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
            pids.add(c.pid)
    return pids


def port_listened(port: int) -> bool:
    """Whether any process, of any user, listens on TCP ``port`` (the kernel's socket table)."""
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in conns)


def port_is_free(host: str, port: int) -> bool:
    """Return True when nothing accepts connections on host:port."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        try:
            s.connect((host if host not in ("0.0.0.0", "::", "") else "127.0.0.1", port))
        except OSError as exc:
            return exc.errno in (errno.ECONNREFUSED, errno.EADDRNOTAVAIL) or isinstance(exc, ConnectionRefusedError)
        return False


def describe(pid: int) -> str:
    """Name a process for an operator: ``pid N name`` (just the pid once it is gone)."""
    try:
        return f"pid {pid} {psutil.Process(pid).name()}"
    except psutil.Error:
        return f"pid {pid}"
