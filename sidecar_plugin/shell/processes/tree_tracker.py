"""Track the sidecar's process tree and reap what survives it.

With ``--num_workers N`` LiteLLM's parent forks uvicorn workers; SIGKILL of the
parent leaves them alive, holding the port and answering health checks, so a
restart cannot bind. Killing by process group is not enough either (a worker
may ``setsid`` away). So the listener remembers every process it has seen in
the tree (identity = pid + create time, so a reused pid is never hit), and
after any exit kills the survivors. Processes spawned between two snapshots
are found by the marker variable render puts in the program's environment.
A process that was never part of the tree is never touched.

Which marked process is an orphan and which is the program supervisord runs
now is decided by parentage whenever supervisord says what it runs
(``live``: the pid of every process it runs, asked just before the kill):
their trees are spared, and every other member or marked process is reaped
whatever its age, since a worker whose parent died has been handed to init
(or to supervisord itself when it is PID 1: that is why its own answer is
asked rather than its tree read). That is exact; birth times are only as
exact as a clock tick, and a worker respawned a few milliseconds before its
parent was killed looked born after the exit, so it was spared while it held
the port. When supervisord does not answer (busy, restarting, or a socket the
listener may not use), only processes surely born before the exit are
reaped. The facts these rules read are ``shell.processes.procs``'s.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import psutil

from sidecar_plugin.shell.processes.procs import (
    alive, born_before, descendants, describe, port_holders, port_listened, processes, trees, wait_gone,
)

Identity = Tuple[int, float]


@dataclass(frozen=True)
class ReapResult:
    """What a reap did, by pid and name; the listener hands the machine its summary (core.listener.inputs.Reaped)."""

    killed: Tuple[int, ...]
    survivors: Tuple[int, ...]
    foreign_holders: Tuple[str, ...]
    port_free: bool = True  # nobody (of any user) listens on the port after the reap


def port_free(port: int, keepers: Sequence[int] = ()) -> bool:
    """Whether nobody listens on ``port`` but ``keepers`` (supervisord, when it owns the socket)."""
    if not keepers:
        return not port_listened(port)
    return not port_holders(port) - set(keepers)


class TreeTracker:
    """Remember every process ever seen in the sidecar's tree, until reaped."""

    def __init__(self, marker_name: str, marker_value: str) -> None:
        self.marker_name = marker_name
        self.marker_value = marker_value
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
            kids = descendants(root)
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

    def _marked(self, spare: Set[int]) -> List[psutil.Process]:
        """Every process carrying our marker, whatever its age (``spare`` and this process excepted)."""
        me = os.getpid()
        return [proc for proc in psutil.process_iter() if proc.pid not in spare and proc.pid != me
                and self.is_marked(proc)]

    def is_marked(self, proc: psutil.Process) -> bool:
        """Whether ``proc`` carries this render's marker variable (is of a sidecar tree)."""
        try:
            return proc.environ().get(self.marker_name) == self.marker_value
        except (psutil.Error, OSError):
            return False

    def reap(self, port: int, spare_roots: Sequence[int] = (), wait: float = 3.0,
             before: Optional[float] = None,
             live: Optional[Callable[[], Optional[Sequence[int]]]] = None,
             keepers: Sequence[int] = ()) -> ReapResult:
        """Kill every surviving member of the tree except what supervisord runs now.

        ``spare_roots`` are the sidecar supervisord runs now as the machine knows
        it; ``live`` returns the pid of every process supervisord runs, or None
        when it does not answer. It is asked *after* the candidates are chosen,
        just before the kill: a sidecar supervisord spawned while the scan ran
        is known by then. Its answer decides by parentage; without one, only
        processes surely born before ``before`` (the exit) are victims.
        ``keepers`` may listen on the port (supervisord, when it owns the
        socket): then the port is "free" when nobody else holds it.
        """
        spare, victims = self.survivors(spare_roots, before, live)
        left = self._kill(victims, wait)
        killed = tuple(sorted(p for p in victims if p not in {q.pid for q in left}))
        foreign = self.foreign_holders(port, spare | set(victims) | set(keepers))
        return ReapResult(killed=killed, survivors=tuple(sorted(p.pid for p in left)), foreign_holders=foreign,
                          port_free=port_free(port, keepers))

    def survivors(self, spare_roots: Sequence[int] = (), before: Optional[float] = None,
                  live: Optional[Callable[[], Optional[Sequence[int]]]] = None
                  ) -> Tuple[Set[int], Dict[int, psutil.Process]]:
        """Return (the pids spared, the survivors of the tree by pid): what ``reap`` kills."""
        before = time.time() if before is None else before
        spare = trees(spare_roots)
        victims = self._candidates(spare)
        running = live() if victims and live is not None else None
        if running is None:  # supervisord did not say what it runs: the clock decides, to a tick
            victims = {pid: proc for pid, proc in victims.items() if born_before(proc, before)}
        else:
            spare |= trees(running)
            victims = {pid: proc for pid, proc in victims.items() if pid not in spare}
        return spare, victims

    def forget(self, pids: Iterable[int]) -> None:
        """Stop tracking ``pids`` (orphans handed to the drain) and the members that are gone."""
        gone = set(pids)
        self.procs = {k: p for k, p in self.procs.items() if k[0] not in gone and alive(p)}
        if self.root is not None and not alive(self.root):
            self.root = None

    def _candidates(self, spare: Set[int]) -> Dict[int, psutil.Process]:
        """The tree's live members and every marked process, by pid (``spare`` excepted)."""
        victims: Dict[int, psutil.Process] = {}
        for (pid, _), proc in list(self.procs.items()):
            if pid not in spare and alive(proc):
                victims[pid] = proc
        for proc in self._marked(spare):
            victims.setdefault(proc.pid, proc)
        return victims

    def _kill(self, victims: Dict[int, psutil.Process], wait: float) -> List[psutil.Process]:
        """SIGKILL ``victims``, wait up to ``wait`` s for them to go, forget the dead; return who is left."""
        for proc in victims.values():
            try:
                proc.kill()  # psutil checks identity (create time) before signalling
            except psutil.Error:
                pass
        left = wait_gone(list(victims.values()), wait)
        self.procs = {k: p for k, p in self.procs.items() if alive(p) and k[0] not in victims}
        if self.root is not None and not alive(self.root):
            self.root = None
        return left

    def foreign_holders(self, port: int, ours: Set[int]) -> Tuple[str, ...]:
        """Name who else listens on ``port``: neither in ``ours`` nor marked (a sidecar just started again)."""
        foreign = []
        holders = port_holders(port)
        for pid in sorted(holders):
            if pid in ours:
                continue
            try:
                if self.is_marked(psutil.Process(pid)):
                    continue  # the sidecar supervisord has just started again
            except psutil.Error:
                continue
            foreign.append(describe(pid))
        return tuple(foreign)

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
