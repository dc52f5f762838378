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
by supervisord) the birth-time rule remains. The facts these rules read (who
lives, who descends from whom, who listens, when each was born) are
``shell.procs``'s.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import psutil

from sidecar_plugin.shell.procs import (
    alive, born_before, describe, port_holders, port_listened, processes, tree_pids, trees, wait_gone,
)

Identity = Tuple[int, float]


@dataclass(frozen=True)
class ReapResult:
    """What a reap did, by pid and name; the listener hands the machine its summary (``core.inputs.Reaped``)."""

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
        return tree_pids(self.keeper) if self.keeper else set()

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
        spare = trees(spare_roots)
        victims = self._candidates(before, spare)
        if victims:
            spare |= trees(live() if live is not None else ()) | self.kept()
            victims = {pid: proc for pid, proc in victims.items() if pid not in spare}
        left = self._kill(victims, wait)
        killed = tuple(sorted(p for p in victims if p not in {q.pid for q in left}))
        return ReapResult(killed=killed, survivors=tuple(sorted(p.pid for p in left)),
                          foreign_holders=self._foreign_holders(port, spare | set(victims)),
                          port_free=not port_listened(port))

    def _candidates(self, before: float, spare: Set[int]) -> Dict[int, psutil.Process]:
        """The tree's live members and the marked processes that may be orphans, by pid (``spare`` excepted)."""
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

    def _foreign_holders(self, port: int, ours: Set[int]) -> Tuple[str, ...]:
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
