"""Replace one chosen worker, gracefully, when the listener asks (a worker over its memory budget) or when it hangs.

uvicorn's ``Multiprocess`` replaces workers only in bulk (SIGHUP: all, one at
a time) or blindly (SIGTTOU removes the newest; a dead worker is respawned
after it died, so the tree serves with one worker less meanwhile). The
listener needs one *chosen* worker replaced without the tree ever serving
with fewer than its configured workers: the replacement is started and must
serve first (uvicorn's own ``wait_until_ready``), only then the old one gets
SIGTERM and drains its requests and streams (``GRACEFUL_SHUTDOWN_TIMEOUT``).

The request comes over the tree's private control socket,
``@$SIDECAR_HEALTH_SOCKET/control/<launcher pid>`` (abstract): ``replace
<pid>`` answers ``accepted``, ``busy`` (a replacement is under way),
``unknown`` (not one of its workers). Only a peer of the launcher's own user
(or root) is heard. The replacement runs in uvicorn's main loop (as SIGHUP's
does), woken by SIGUSR1. Imports nothing of sidecar_plugin.

A worker whose event loop hangs, or that served its requests (its limit), is replaced alone the same way
(``hang_watch`` says when); a failed replacement of a spent worker is tried again later, the spent one serving on.
"""

import os
import signal
import socket
import struct
import threading
import time
from typing import Any, Dict, Optional, Tuple

from uvicorn.supervisors import Multiprocess

CONTROL = "%s/control/%d"
HUNG_GRACE = 5.0  # seconds a hung worker gets after SIGTERM, should its loop come back, before SIGKILL
RECYCLE_RETRY = 10.0  # seconds before a spent worker's failed replacement is tried again (doubling, up to a minute)

try:
    from uvicorn.supervisors import multiprocess as _multiprocess  # hang_watch puts its own Process there
    from uvicorn.supervisors.multiprocess import Process
except ImportError:  # another uvicorn: its own supervisor, no replacement on request
    Process = None


def supported() -> bool:
    """Whether this uvicorn's Multiprocess has what a graceful replacement needs (0.55's shape)."""
    needs = ("wait_until_ready", "terminate", "kill", "target")
    return Process is not None and all(hasattr(Process, n) for n in needs) \
        and all(hasattr(Multiprocess, n) for n in ("handle_signals", "keep_subprocess_alive"))


class Replacing(Multiprocess):
    """uvicorn's supervisor, plus: replace the worker the listener names (SIGUSR1 wakes its loop), or a hung one."""

    pending: Optional[int] = None  # the pid asked for, until its replacement serves (or failed)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retry_at: Dict[int, Tuple[float, float]] = {}  # a spent worker whose replacement failed: (when, delay)

    def stopping(self) -> bool:
        """A stop was asked and its signal waits in the queue: start no new worker before it is heard."""
        return any(sig in self.signal_queue for sig in (signal.SIGTERM, signal.SIGINT))

    def ask(self, pid: int) -> str:
        if self.pending is not None:
            return "busy"
        if pid not in [p.pid for p in self.processes]:
            return "unknown"
        self.pending = pid
        self.signal_queue.append(signal.SIGUSR1)
        return "accepted"

    hang_window = 20.0  # the listener's default --hang-window (SIDECAR_WORKER_HANG_WINDOW: hang_watch)
    listen_fd: Optional[int] = None  # what a re-exec hands over (SIGUSR2): the listening socket's fd, the health socket
    health: Any = None
    adopted: Tuple[int, ...] = ()  # workers of the previous image: they serve until every new worker does

    def handle_usr2(self) -> None:
        if self.listen_fd is None or self.adopted:
            print("sidecar launcher: SIGUSR2 ignored (%s)" % ("a re-exec is under way" if self.adopted
                                                            else "nothing to hand over"), flush=True)
            return
        _reexec().reexec(self.listen_fd, self.health)

    def terminate_all(self) -> None:
        super().terminate_all()
        _reexec().retire(self.adopted)  # a stop during a re-exec: the previous workers drain too
        self.adopted = ()

    def handle_usr1(self) -> None:
        try:
            self._replace(self.pending, "asked by the listener")
        finally:
            self.pending = None  # the next request is heard only now: one replacement at a time

    def keep_subprocess_alive(self) -> None:
        super().keep_subprocess_alive()
        if self.adopted and not self.should_exit.is_set() and len(self.processes) >= self.processes_num \
                and all(p.is_ready(timeout=1) for p in self.processes):
            adopted, self.adopted = self.adopted, ()
            _reexec().retire(adopted)
        for proc in list(self.processes):  # a worker that served its requests (hang_watch.recycling)
            spent = getattr(proc, "spent", None)
            if spent is None or not spent.value or self.should_exit.is_set() or self.stopping() \
                    or time.monotonic() < self.retry_at.get(proc.pid, (0.0, 0.0))[0]:
                continue
            if self._replace(proc.pid, "it served its requests"):
                self.retry_at.pop(proc.pid, None)
            else:  # the spent one serves on meanwhile
                delay = min(2 * self.retry_at.get(proc.pid, (0.0, RECYCLE_RETRY / 2))[1], 60.0)
                self.retry_at[proc.pid] = (time.monotonic() + delay, delay)
                break  # one failed start per turn: signals and the other workers are seen to first
        now = time.monotonic()
        for proc in list(self.processes):
            if not self.should_exit.is_set() and getattr(proc, "hung", lambda *_: False)(now, self.hang_window):
                print("sidecar launcher: worker %d has not run its event loop for %.0f s (hung): replacing it alone"
                      % (proc.pid, now - proc.beat.value), flush=True)
                self._replace(proc.pid, "hung", grace=HUNG_GRACE)

    def _replace(self, pid: Any, why: str, grace: Optional[float] = None) -> bool:  # pid None (stray SIGUSR1): no-op
        """Replace worker ``pid`` by a new one, serving before the old one drains; False when the new one failed."""
        found = [i for i, p in enumerate(self.processes) if p.pid == pid]
        if not found or self.should_exit.is_set():
            return True
        old = self.processes[found[0]]
        new = _multiprocess.Process(self.config, self.sockets)
        new.start()
        if not new.wait_until_ready(self.config.timeout_worker_healthcheck, self.should_exit):
            new.kill()
            new.join()
            print("sidecar launcher: the replacement of worker %d did not serve in time; keeping it" % pid, flush=True)
            return False
        self.processes[found[0]] = new
        old.terminate()  # it drains; joined aside so the loop keeps watching the others meanwhile
        threading.Thread(target=_retire, args=(old, grace), name="retire-%d" % pid, daemon=True).start()
        print("sidecar launcher: worker %d replaced by %d (%s)" % (pid, new.pid, why), flush=True)
        return True


def _reexec() -> Any:
    try:
        import reexec  # run as `python <this folder>`: its modules are importable by name
    except ImportError:
        from sidecar_plugin.shell.litellm_launch import reexec
    return reexec


def _retire(proc: Any, grace: Any) -> None:  # grace: seconds, or None (join waits: never printed)
    """Wait for a replaced worker to go; SIGKILL it after ``grace`` seconds, if given (a hung loop never drains)."""
    proc.process.join(grace)
    if proc.process.exitcode is None:
        proc.process.kill()
        print("sidecar launcher: worker %d did not drain in %.0f s: SIGKILL" % (proc.pid, grace), flush=True)
    proc.process.join()


def replacing_multiprocess() -> Any:
    """Return the supervisor class: ``Replacing``, or uvicorn's own where its shape is another."""
    return Replacing if supported() else Multiprocess


def answered_or_exited() -> None:
    """A worker's health ping ends when the worker answers *or exits*, not only at its timeout.

    uvicorn's supervisor pings each live worker every half second and waits
    for the answer up to ``timeout_worker_healthcheck`` (60 s, LiteLLM's
    default) on a pipe whose worker end it also holds open, so a worker that
    dies never closes it. A ping that crosses a worker's exit (its request
    limit reached: the answering thread stops as the interpreter ends, the
    process lives a moment longer) blocked the whole supervisor for 60 s:
    no worker respawned, none replaced; with one worker nothing served, and
    the listener restarted the tree after its hang window (seen: 1 run in 20
    of a one-worker tree with ``--max-requests``). The wait now also watches
    the process's exit (its sentinel).
    """
    if Process is None or not hasattr(Process, "_healthcheck"):  # another uvicorn: its own ping
        return
    import pickle
    from multiprocessing.connection import wait

    def _healthcheck(self: Any, timeout: float) -> Any:
        try:
            self.parent_conn.send(b"ping")
            if self.parent_conn in wait([self.parent_conn, self.process.sentinel], timeout):
                return self.parent_conn.recv()
            return None  # no answer in time, or the worker exited
        except (OSError, EOFError, ValueError, pickle.UnpicklingError):
            return None

    Process._healthcheck = _healthcheck  # hang_watch's Beating inherits it


def serve_control(supervisor: Any, prefix: Optional[str]) -> Optional[socket.socket]:
    """Listen on the tree's control socket in a daemon thread; return the socket (None when not possible)."""
    if not prefix or not hasattr(supervisor, "ask"):
        print("sidecar launcher: no worker replacement on request (this uvicorn's supervisor has another shape)"
              if prefix else "sidecar launcher: no control socket (SIDECAR_HEALTH_SOCKET unset)", flush=True)
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind("\0" + CONTROL % (prefix, os.getpid()))
        sock.listen(8)
    except OSError:
        sock.close()
        return None
    threading.Thread(target=_control_loop, args=(sock, supervisor), name="control", daemon=True).start()
    return sock


def _control_loop(sock: socket.socket, supervisor: Any) -> None:
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        try:
            conn.settimeout(2.0)
            _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
            if uid not in (0, os.getuid()):
                conn.sendall(b"refused\n")
                continue
            words = conn.recv(64).decode("ascii", "replace").split()
            answer = "bad request"
            if len(words) == 2 and words[0] == "replace" and words[1].isdigit():
                answer = supervisor.ask(int(words[1]))
            conn.sendall(answer.encode() + b"\n")
        except OSError:
            pass
        finally:
            conn.close()
