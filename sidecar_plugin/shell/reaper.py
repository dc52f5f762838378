"""Track the sidecar's process tree and reap what survives it.

With ``--num_workers N`` LiteLLM's parent forks uvicorn workers; SIGKILL of the
parent leaves them alive, holding the port and answering health checks, so a
restart cannot bind. Killing by process group is not enough either (a worker
may ``setsid`` away). So the listener remembers every process it has seen in
the tree (identity = pid + create time, so a reused pid is never hit), and
after any exit kills the survivors. Processes spawned between two snapshots
are found by the marker variable render puts in the program's environment.
A process that was never part of the tree is never touched.

Which marked process is an orphan and which is the sidecar supervisord runs
now is decided by parentage when the listener knows supervisord's pid (the
``keeper``): everything descending from supervisord is its live program, and
a worker whose parent died has been handed to init. That is exact; the birth
times it replaces are only as exact as a clock tick, and a worker respawned
a few milliseconds before its parent was killed looked born after the exit,
so it was spared while it held the port. Without a keeper (a listener not run
by supervisord) the birth-time rule remains.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import psutil

Identity = Tuple[int, float]

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


def supervisord_pid() -> Optional[int]:
    """Return the pid of the supervisord running this process, if one does.

    supervisord puts ``SUPERVISOR_ENABLED`` in its children's environment; the
    listener is its child, so its parent is the keeper of the live program.
    """
    parent = os.getppid()
    return parent if os.environ.get("SUPERVISOR_ENABLED") and parent > 1 else None


def born_before(proc: psutil.Process, moment: float) -> bool:
    """Whether ``proc`` surely started before ``moment`` (a process born after an exit is never its orphan)."""
    try:
        return born_at(proc) < moment - BORN_SLACK
    except psutil.Error:
        return False


@dataclass(frozen=True)
class ReapResult:
    killed: Tuple[int, ...]
    survivors: Tuple[int, ...]
    foreign_holders: Tuple[str, ...]
    port_free: bool = True  # nobody (of any user) listens on the port after the reap


class TreeTracker:
    """Remember every process ever seen in the sidecar's tree, until reaped."""

    def __init__(self, marker_name: str, marker_value: str, keeper: Optional[int] = None) -> None:
        self.marker_name = marker_name
        self.marker_value = marker_value
        self.keeper = keeper  # supervisord's pid: what descends from it is the live program, never an orphan
        self.procs: Dict[Identity, psutil.Process] = {}
        self.root: Optional[psutil.Process] = None

    def identities(self) -> List[Identity]:
        return sorted(self.procs)

    def adopt(self, identities: Iterable[Any]) -> None:
        """Take over the tree a previous listener recorded, when still the same processes."""
        for proc in processes(identities):
            self._add(proc)

    def track(self, pid: int) -> None:
        """Make ``pid`` the root and snapshot its descendants now."""
        try:
            root = psutil.Process(pid)
            self.root = root
            self._add(root)
        except psutil.Error:
            self.root = None
            return
        self.refresh()

    def refresh(self) -> bool:
        """Add the root's current descendants; return True if any was new."""
        root = self.root
        if root is None:
            return False
        try:
            kids = root.children(recursive=True)
        except psutil.Error:
            return False
        before = len(self.procs)
        for kid in kids:
            self._add(kid)
        return len(self.procs) != before

    def _add(self, proc: psutil.Process) -> None:
        try:
            key = (proc.pid, proc.create_time())
        except psutil.Error:
            return
        self.procs.setdefault(key, proc)

    def kept(self) -> Set[int]:
        """Return what supervisord (the keeper) runs now: its whole tree, or nothing without a keeper."""
        return _tree_pids(self.keeper) if self.keeper else set()

    def _marked(self, since: float, before: Optional[float], spare: Set[int]) -> List[psutil.Process]:
        """Processes carrying our marker, born between the tree's oldest member and ``before``.

        ``before`` is when the exit was seen: a sidecar supervisord started
        after that is the new tree, never a victim (``None``: the keeper's
        tree decides instead).
        """
        found = []
        me = os.getpid()
        for proc in psutil.process_iter(["pid", "create_time"]):
            info = proc.info
            born = info["create_time"] or 0
            if info["pid"] in spare or info["pid"] == me or born < since - 2:
                continue
            if self.is_marked(proc) and (before is None or born_before(proc, before)):
                found.append(proc)
        return found

    def is_marked(self, proc: psutil.Process) -> bool:
        """Whether ``proc`` carries this render's marker variable (is of a sidecar tree)."""
        try:
            return proc.environ().get(self.marker_name) == self.marker_value
        except (psutil.Error, OSError):
            return False

    def reap(self, port: int, spare_roots: Sequence[int] = (), wait: float = 3.0,
             before: Optional[float] = None, live: Optional[Callable[[], Sequence[int]]] = None) -> ReapResult:
        """Kill every surviving member of the tree except the live trees of ``spare_roots``.

        ``spare_roots`` are the sidecar supervisord runs now (after an autorestart
        it may already be up): they and their descendants are the new tree.
        With a keeper, everything descending from supervisord is spared and
        nothing else of the tree is (parentage decides); without one, only
        processes surely born before ``before`` (the exit) are candidates.
        ``live`` and the keeper's tree are asked *after* the candidates are
        chosen, just before the kill: a sidecar supervisord spawned while the
        scan ran is known by then.
        """
        before = time.time() if before is None else before
        spare: Set[int] = set()
        for root in spare_roots:
            spare |= _tree_pids(root)
        oldest = min((k[1] for k in self.procs), default=before)
        # With a keeper, a process born after the exit outside supervisord's tree is an orphan's
        # offspring: parentage, not the clock, says it is not the live program.
        cutoff = None if self.keeper else before
        victims: Dict[int, psutil.Process] = {}
        for (pid, ctime), proc in list(self.procs.items()):
            if pid not in spare and alive(proc) and (cutoff is None or born_before(proc, cutoff)):
                victims[pid] = proc
        for proc in self._marked(oldest, cutoff, spare):
            victims.setdefault(proc.pid, proc)
        if victims:
            for root in live() if live is not None else ():
                spare |= _tree_pids(root)
            spare |= self.kept()
            victims = {pid: proc for pid, proc in victims.items() if pid not in spare}
        for proc in victims.values():
            try:
                proc.kill()  # psutil checks identity (create time) before signalling
            except psutil.Error:
                pass
        left = _wait_gone(list(victims.values()), wait)
        self.procs = {k: p for k, p in self.procs.items() if alive(p) and k[0] not in victims}
        if self.root is not None and not alive(self.root):
            self.root = None
        foreign = []
        holders = port_holders(port)
        for pid in sorted(holders):
            if pid in spare or pid in victims:
                continue
            try:
                if self.is_marked(psutil.Process(pid)):
                    continue  # the sidecar supervisord has just started again
            except psutil.Error:
                continue
            foreign.append(_describe(pid))
        killed = tuple(sorted(p for p in victims if p not in {q.pid for q in left}))
        return ReapResult(killed=killed, survivors=tuple(sorted(p.pid for p in left)),
                          foreign_holders=tuple(foreign), port_free=not port_listened(port))

    def kill_all(self) -> int:
        """SIGKILL every tracked member (a hung tree ignores SIGTERM); return how many."""
        self.refresh()
        count = 0
        for proc in list(self.procs.values()):
            try:
                proc.send_signal(signal.SIGKILL)
                count += 1
            except psutil.Error:
                pass
        return count


def _wait_gone(procs: List[psutil.Process], timeout: float) -> List[psutil.Process]:
    """Wait until each process is gone or a zombie (an orphan's zombie may never be
    collected by its new parent, and holds neither port nor memory); return the rest."""
    deadline = time.monotonic() + timeout
    left = [p for p in procs if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.01)
        left = [p for p in left if alive(p)]
    return left


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


def _tree_pids(pid: Optional[int]) -> Set[int]:
    if pid is None:
        return set()
    try:
        root = psutil.Process(pid)
        return {pid} | {p.pid for p in root.children(recursive=True)}
    except psutil.Error:
        return set()


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


def _describe(pid: int) -> str:
    try:
        return f"pid {pid} {psutil.Process(pid).name()}"
    except psutil.Error:
        return f"pid {pid}"
