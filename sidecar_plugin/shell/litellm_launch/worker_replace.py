"""Replace one chosen worker, gracefully, when the listener asks (a worker over its memory budget).

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
"""

import os
import signal
import socket
import struct
import threading
from typing import Any, Optional

from uvicorn.supervisors import Multiprocess

CONTROL = "%s/control/%d"

try:
    from uvicorn.supervisors.multiprocess import Process
except ImportError:  # another uvicorn: its own supervisor, no replacement on request
    Process = None


def supported() -> bool:
    """Whether this uvicorn's Multiprocess has what a graceful replacement needs (0.55's shape)."""
    return Process is not None and all(hasattr(Process, n) for n in ("wait_until_ready", "terminate", "kill")) \
        and all(hasattr(Multiprocess, n) for n in ("handle_signals", "keep_subprocess_alive"))


class Replacing(Multiprocess):
    """uvicorn's supervisor, plus: replace the worker the listener names (SIGUSR1 wakes its loop)."""

    pending: Optional[int] = None  # the pid asked for, until its replacement serves (or failed)

    def ask(self, pid: int) -> str:
        if self.pending is not None:
            return "busy"
        if pid not in [p.pid for p in self.processes]:
            return "unknown"
        self.pending = pid
        self.signal_queue.append(signal.SIGUSR1)
        return "accepted"

    def handle_usr1(self) -> None:
        try:
            if self.pending is not None:  # not a signal sent by hand
                self._replace(self.pending)
        finally:
            self.pending = None  # the next request is heard only now: one replacement at a time

    def _replace(self, pid: int) -> None:
        found = [i for i, p in enumerate(self.processes) if p.pid == pid]
        if not found or self.should_exit.is_set():
            return
        old = self.processes[found[0]]
        new = Process(self.config, self.sockets)
        new.start()
        if not new.wait_until_ready(self.config.timeout_worker_healthcheck, self.should_exit):
            new.kill()
            new.join()
            print("sidecar launcher: the replacement of worker %d did not serve in time; keeping it" % pid, flush=True)
            return
        self.processes[found[0]] = new
        old.terminate()  # it drains; joined aside so the loop keeps watching the others meanwhile
        threading.Thread(target=old.join, name="retire-%d" % pid, daemon=True).start()
        print("sidecar launcher: worker %d replaced by %d (asked by the listener)" % (pid, new.pid), flush=True)


def replacing_multiprocess() -> Any:
    """Return the supervisor class: ``Replacing``, or uvicorn's own where its shape is another."""
    return Replacing if supported() else Multiprocess


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
