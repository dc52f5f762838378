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

A worker whose event loop hangs while the launcher runs is replaced alone,
the same way: uvicorn's own check pings each worker from a thread, which
answers while the loop is blocked, and the listener's probes are answered by
its siblings, so nothing else sees it. Each worker's loop beats (uvicorn's
``callback_notify``, once a second, from the loop itself) into memory the
launcher shares; a worker serving (not draining) whose beat is older than
``SIDECAR_WORKER_HANG_WINDOW`` seconds (default 20, the listener's hang
window) gets a replacement that serves first, then SIGTERM, and SIGKILL
``HUNG_GRACE`` seconds later (a blocked loop never drains). Only when the
launcher itself (or every worker) stops answering does the listener restart
the whole tree.
"""

import multiprocessing
import os
import signal
import socket
import struct
import threading
import time

CONTROL = "%s/control/%d"
HANG_WINDOW = 20.0  # the listener's default --hang-window
HUNG_GRACE = 5.0  # seconds a hung worker gets after SIGTERM, should its loop come back, before SIGKILL
BEAT_EVERY = 1.0
BEAT = []  # in a worker: its shared beat (seconds on the monotonic clock; -1 once it drains)


from uvicorn.supervisors import Multiprocess

try:
    from uvicorn.supervisors import multiprocess as _multiprocess
    from uvicorn.supervisors.multiprocess import Process
except ImportError:  # another uvicorn: its own supervisor, no replacement on request
    Process = None


def supported():
    """Whether this uvicorn's Multiprocess has what a graceful replacement needs (0.55's shape)."""
    return Process is not None and all(hasattr(Process, n) for n in ("wait_until_ready", "terminate", "kill", "target")) \
        and all(hasattr(Multiprocess, n) for n in ("handle_signals", "keep_subprocess_alive"))


def hang_window():
    value = os.environ.get("SIDECAR_WORKER_HANG_WINDOW", "")
    try:
        return float(value) if float(value) > 0 else HANG_WINDOW
    except ValueError:
        return HANG_WINDOW


async def _beat():
    if BEAT:
        BEAT[0].value = time.monotonic()


if Process is not None:
    class Beating(Process):
        """A uvicorn worker whose event loop beats into memory shared with the launcher (forked: inherited)."""

        def __init__(self, config, sockets):
            self.beat = multiprocessing.RawValue("d", 0.0)  # 0: not serving yet (uvicorn's start check covers it)
            super().__init__(config, sockets)

        def target(self, sockets=None):
            BEAT[:] = [self.beat]
            from uvicorn.server import Server

            shutdown = Server.shutdown

            async def draining(server, sockets=None):
                self.beat.value = -1.0  # draining: its loop stops beating on purpose
                await shutdown(server, sockets)

            Server.shutdown = draining
            super().target(sockets)

        def hung(self, now, window):
            return self.beat.value > 0 and now - self.beat.value > window


def beating(config):
    """Make every worker uvicorn starts from now on beat from its loop; False where it cannot (not forked)."""
    import uvicorn._subprocess

    context = getattr(uvicorn._subprocess, "spawn", None)
    if not supported() or getattr(context, "get_start_method", lambda: "")() != "fork":
        return False  # the beat lives in memory the workers inherit
    config.callback_notify = _beat
    config.timeout_notify = BEAT_EVERY
    _multiprocess.Process = Beating
    return True


class Replacing(Multiprocess):
    """uvicorn's supervisor, plus: replace the worker the listener names (SIGUSR1 wakes its loop), or a hung one."""

    pending = None  # the pid asked for, until its replacement serves (or failed)

    def ask(self, pid):
        if self.pending is not None:
            return "busy"
        if pid not in [p.pid for p in self.processes]:
            return "unknown"
        self.pending = pid
        self.signal_queue.append(signal.SIGUSR1)
        return "accepted"

    hang_window = HANG_WINDOW

    def handle_usr1(self):
        try:
            self._replace(self.pending, "asked by the listener")
        finally:
            self.pending = None  # the next request is heard only now: one replacement at a time

    def keep_subprocess_alive(self):
        super().keep_subprocess_alive()
        now = time.monotonic()
        for proc in list(self.processes):
            if not self.should_exit.is_set() and getattr(proc, "hung", lambda *_: False)(now, self.hang_window):
                print("sidecar launcher: worker %d has not run its event loop for %.0f s (hung): replacing it alone"
                      % (proc.pid, now - proc.beat.value), flush=True)
                self._replace(proc.pid, "hung", grace=HUNG_GRACE)

    def _replace(self, pid, why, grace=None):
        found = [i for i, p in enumerate(self.processes) if p.pid == pid]
        if not found or self.should_exit.is_set():
            return
        old = self.processes[found[0]]
        new = _multiprocess.Process(self.config, self.sockets)
        new.start()
        if not new.wait_until_ready(self.config.timeout_worker_healthcheck, self.should_exit):
            new.kill()
            new.join()
            print("sidecar launcher: the replacement of worker %d did not serve in time; keeping it" % pid, flush=True)
            return
        self.processes[found[0]] = new
        old.terminate()  # it drains; joined aside so the loop keeps watching the others meanwhile
        threading.Thread(target=_retire, args=(old, grace), name="retire-%d" % pid, daemon=True).start()
        print("sidecar launcher: worker %d replaced by %d (%s)" % (pid, new.pid, why), flush=True)


def _retire(proc, grace):
    """Wait for a replaced worker to go; SIGKILL it after ``grace`` seconds, if given (a hung loop never drains)."""
    proc.process.join(grace)
    if proc.process.exitcode is None:
        proc.process.kill()
        print("sidecar launcher: worker %d did not drain in %.0f s: SIGKILL" % (proc.pid, grace), flush=True)
    proc.process.join()


def replacing_multiprocess():
    """Return the supervisor class: ``Replacing``, or uvicorn's own where its shape is another."""
    return Replacing if supported() else Multiprocess


def serve_control(supervisor, prefix):
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


def _control_loop(sock, supervisor):
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
