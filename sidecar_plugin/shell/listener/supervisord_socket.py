"""The listener's rules when supervisord owns the listening socket (``[fcgi-program]``, ``--port-owner supervisord``).

supervisord (and the ``sidecar`` rpcinterface holding it, ``shell.supervisord.socket_holder``) keeps
the port listening whatever happens to LiteLLM, so three rules change:

- **Identity.** The port is shared by every process that inherited the
  socket, an older tree's orphans included, so an answer on it proves
  nothing. Health is probed on the tree's private socket
  ``@PREFIX/<root pid>`` instead, and counts only when the process listening
  there (the kernel's ``SO_PEERCRED``) is of the tree supervisord runs now.
- **Orphans drain.** Workers of a tree whose main process died keep serving
  the shared socket; they are handed to a ``Drainer`` rather than SIGKILLed,
  and get SIGTERM (they stop accepting and finish their requests) once the
  replacement serves, SIGKILL only after the drain window.
- **The port.** supervisord listening on it is no foreign holder, and
  "free" means no process outside supervisord and the sidecar holds it.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import psutil

from sidecar_plugin.core.listener import machine as m
from sidecar_plugin.names import DEFAULT_STOP_TIMEOUT, OWNER_SUPERVISORD, STOP_MARGIN, State
from sidecar_plugin.shell.processes import port_holders
from sidecar_plugin.shell.processes.procs import alive, describe, tree_pids, wait_gone
from sidecar_plugin.shell.processes.tree_tracker import TreeTracker, port_free


def identify(peer: Optional[int], root: Optional[int]) -> Tuple[bool, Optional[str]]:
    """Return (whether the private socket's listener is of the tree rooted at ``root``, who it is otherwise)."""
    if peer is None:
        return False, "nobody (the tree's private health socket did not answer)"
    if root is not None and peer in tree_pids(root):
        return True, None
    return False, describe(peer)


def drain_window(procs: Sequence[psutil.Process]) -> float:
    """The drain window the orphans were started with (their ``GRACEFUL_SHUTDOWN_TIMEOUT``), plus a margin."""
    for proc in procs:
        try:
            value = proc.environ().get("GRACEFUL_SHUTDOWN_TIMEOUT", "")
        except (psutil.Error, OSError):
            continue
        if value.isdigit():
            return float(value) + STOP_MARGIN
    return float(DEFAULT_STOP_TIMEOUT + STOP_MARGIN)


class Drainer:
    """Orphans of an older tree: they serve until the replacement does, then drain and go."""

    def __init__(self, log: Any) -> None:
        self.log = log
        self.pending: Dict[int, psutil.Process] = {}
        self.exited: Optional[int] = None  # the root whose exit left the pending orphans
        self.draining: Dict[int, psutil.Process] = {}
        self.lock = threading.Lock()

    def busy(self) -> List[int]:
        """The orphans draining now: a reap spares them (their requests finish; the drain window ends them)."""
        with self.lock:
            self.draining = {pid: p for pid, p in self.draining.items() if alive(p)}
            return sorted(self.draining)

    def defer(self, procs: Dict[int, psutil.Process], exited: Optional[int] = None) -> None:
        with self.lock:
            fresh = sorted(pid for pid, p in procs.items() if alive(p) and pid not in self.pending)
            self.pending.update({pid: p for pid, p in procs.items() if alive(p)})
            if exited is not None:
                self.exited = exited
        if fresh:
            self.log.info("orphaned process(es) %s keep serving until the new sidecar does",
                          " ".join(map(str, fresh)))

    def drain(self) -> List[int]:
        """SIGTERM every pending orphan now; SIGKILL what is left after the drain window (in a thread)."""
        with self.lock:
            procs, self.pending = list(self.pending.values()), {}
        sent = []
        for proc in procs:
            try:
                proc.terminate()  # psutil checks identity (create time) before signalling
                sent.append(proc.pid)
            except psutil.Error:
                pass
        with self.lock:
            self.draining.update({p.pid: p for p in procs if p.pid in sent})
        if sent:
            self.log.info("the new sidecar serves: draining orphaned process(es) %s", " ".join(map(str, sent)))
            threading.Thread(target=self._finish, args=(procs,), name="drain", daemon=True).start()
        return sent

    def _finish(self, procs: List[psutil.Process]) -> None:
        for proc in wait_gone(procs, drain_window(procs)):
            try:
                proc.kill()
                self.log.warning("orphaned process %d did not drain in time: SIGKILL", proc.pid)
            except psutil.Error:
                pass


def supervisord_pid(link: Any) -> int:
    """supervisord's pid (it owns the socket): its own answer, else the listener's parent."""
    pid = link.call("getPID")
    return int(pid) if isinstance(pid, int) and pid > 0 else os.getppid()


def defer_reap(tracker: TreeTracker, link: Any, port: int, action: m.Reap, drainer: Drainer,
               live: Callable[[], Optional[List[int]]]) -> m.Reaped:
    """Carry out ``Reap`` of a tree that exited unexpectedly: its orphans serve on, the drainer ends them."""
    # Orphans still pending from an earlier exit, and another tree exited since: the replacement died
    # too before it served (it may not even bind, when supervisord restarted and the orphans hold the
    # old socket): drain them now. The same exit reported twice (the pid watch, then supervisord's
    # EXITED: the root is forgotten by then) leaves them serving: nothing replaces them yet.
    root = tracker.root.pid if tracker.root is not None else None
    if root is not None and root != drainer.exited:
        drainer.drain()
    spare_roots = ((action.spare,) if action.spare else ()) + tuple(drainer.busy())  # draining: not pending again
    spare, orphans = tracker.survivors(spare_roots, before=action.before, live=live)
    drainer.defer(orphans, exited=root)
    tracker.forget(orphans)
    owner = supervisord_pid(link)
    foreign = tracker.foreign_holders(port, spare | set(orphans) | {owner})
    return m.Reaped(killed=0, foreign_holders=foreign, port_free=port_free(port, (owner,)))


def who_answers(opts: Any, probe: Any, root: Optional[int]) -> Tuple[bool, Optional[str]]:
    """Return (whether the healthy answer was the sidecar's own, who gave it otherwise), by the port's owner."""
    if opts.port_owner == OWNER_SUPERVISORD:
        return identify(probe.peer, root)
    return port_holders.owner(opts.port, opts.host, root)


def after_step(drainer: Optional[Drainer], before: Any, after: Any) -> None:
    """Drain the orphans once the new tree serves (``running``), or once the sidecar is stopped."""
    if drainer is not None and after.state is not before.state and after.state in (State.RUNNING, State.STOPPED):
        drainer.drain()


class PortHold:
    """Whether supervisord holds the port open while LiteLLM is down, and why not, for the state file.

    Where supervisord owns the socket, the plugin inside it is asked (at the listener's start and each start
    of the sidecar: a supervisord started before its include carried the plugin has none); where LiteLLM
    binds the port, render said why (``--port-note``).
    """

    def __init__(self, opts: Any, link: Any, log: Any) -> None:
        self.opts, self.link, self.log = opts, link, log
        self.owned = opts.port_owner == OWNER_SUPERVISORD
        self.held: Optional[bool] = None if self.owned else False
        self.note: Optional[str] = None if self.owned else (opts.port_note or "LiteLLM binds the port itself")

    def ask(self) -> None:
        if not self.owned:
            return
        answer = self.link.port_hold(self.opts.program)
        if answer is None:  # supervisord did not answer: asked again at the next start
            return
        held, note = answer
        if not held and held != self.held:
            self.log.warning("port %d is not held by supervisord: %s", self.opts.port, note)
        self.held, self.note = held, None if held else (note or None)

    def fields(self) -> Dict[str, Any]:
        return {"port_held": self.held, "port_note": self.note}
