"""The supervisord event listener: the imperative shell around ``machine.py``.

Three kinds of thread, so that no event waits on a probe and no probe waits on
an event (superlance's ``httpok`` probes inside the event handler, on ticks):

- the protocol loop (main thread) reads each event, queues it and acknowledges
  it at once, whatever its payload;
- the prober probes ``/health/liveliness`` on its own schedule: often while
  the sidecar starts, steadily while it runs;
- a pid watcher per sidecar pid wakes the moment that process exits (Linux
  pidfd), well before supervisord's one-second loop notices.

One engine thread owns the model: it feeds every input to ``machine.step``
and carries out the actions (state file, reaping, XML-RPC), and refreshes the
heartbeat. stdout is supervisord's protocol channel: at start-up it is moved
to a private descriptor and fd 1 points at stderr, so no stray print from any
library can ever corrupt the protocol.
"""

from __future__ import annotations

import logging
import os
import queue
import select
import socket
import stat
import threading
import time
from dataclasses import dataclass, replace
from typing import IO, Any, Callable, Dict, List, Optional, Tuple
from xmlrpc.client import Fault

import psutil
from supervisor import childutils

from sidecar_plugin import machine as m
from sidecar_plugin.discovery import process_name
from sidecar_plugin.metrics import MetricsFile, adopt_counters, count_transition, crash_cause, new_counters
from sidecar_plugin.probe import Prober, health_url
from sidecar_plugin.reaper import TreeTracker
from sidecar_plugin.redact import Redactor, secrets_from_config, tail_lines
from sidecar_plugin.render import MARKER_ENV, file_version, marker_value
from sidecar_plugin.statefile import (
    SCHEMA, State, StateUnavailable, append_history, read_state, write_state,
)

log = logging.getLogger("sidecar_plugin.listener")

HEARTBEAT_EVERY = 2.0
TICK_EVERY = 0.1
IDLE_TICK_EVERY = 0.5
TRACK_FAST_FOR = 30.0
RECONCILE = object()  # on each TICK: compare with supervisord, replay what was lost


@dataclass(frozen=True)
class ListenerOptions:
    """What the listener is told on its command line."""

    program: str
    port: int
    state_file: str
    log_file: str
    host: str = "127.0.0.1"
    group: Optional[str] = None
    config_path: str = ""
    health_timeout: float = 20.0
    probe_interval: float = 1.0
    probe_timeout: float = 1.0
    starting_probe_interval: float = 0.1
    failure_threshold: int = 3
    tail_lines: int = 40

    @property
    def rpc_name(self) -> str:
        """The name supervisord's XML-RPC knows the program by."""
        return process_name(self.program, self.group)


# ---- the event-listener protocol ---------------------------------------------

def parse_headers(line: str) -> Dict[str, str]:
    """Parse ``key:value key:value``; tokens without a colon are skipped, never fatal."""
    headers: Dict[str, str] = {}
    for token in line.split():
        key, sep, value = token.partition(":")
        if sep:
            headers[key] = value
    return headers


def parse_event(headers: Dict[str, str], payload: str) -> Tuple[str, Dict[str, str]]:
    """Return (event name, payload headers) of one event; unknown shapes give empty headers."""
    first = payload.split("\n", 1)[0] if payload else ""
    return headers.get("eventname", ""), parse_headers(first)


def event_input(name: str, body: Dict[str, str], program: str, group: str) -> Optional[m.ProcEvent]:
    """Turn a PROCESS_STATE event of our program into a machine input, else None."""
    if not name.startswith("PROCESS_STATE_"):
        return None
    if body.get("processname") != program or body.get("groupname", group) != group:
        return None
    pid = body.get("pid")
    expected = body.get("expected")
    return m.ProcEvent(
        state=name[len("PROCESS_STATE_"):],
        pid=int(pid) if pid and pid.isdigit() else None,
        expected=None if expected is None else expected == "1",
        from_state=body.get("from_state"),
    )


def protocol_loop(stdin: IO[bytes], stdout: IO[str], handle: Callable[[str, str], None]) -> None:
    """Speak supervisord's listener protocol until stdin closes.

    Every event is acknowledged, whatever happens to it: a listener that stops
    acknowledging makes supervisord buffer and then drop events.
    """
    while True:
        childutils.listener.ready(stdout)
        line = stdin.readline()
        if not line:
            return
        text = line.decode("utf-8", "replace")
        headers = parse_headers(text)
        try:
            length = max(0, int(headers.get("len", "0")))
        except ValueError:
            length = 0
        payload = stdin.read(length) if length else b""
        if length and len(payload) < length:
            return
        try:
            handle(text, payload.decode("utf-8", "replace"))
        except Exception:  # never let one event take the listener down
            log.exception("could not handle event %s", headers.get("eventname", "?"))
        childutils.listener.ok(stdout)


# ---- the engine ---------------------------------------------------------------

class Listener:
    """Owns the model; everything that touches the world happens here.

    Collaborators are passed in (``rpc_factory``, streams) so tests can run the
    loop against fakes, as with superlance's httpok.
    """

    def __init__(self, opts: ListenerOptions, rpc_factory: Callable[[], Any],
                 clock: Callable[[], float] = time.time, metrics: Optional[MetricsFile] = None) -> None:
        self.opts = opts
        self.log = logging.LoggerAdapter(log, {"program": opts.program})
        self.metrics = metrics
        self.counters = new_counters()
        # the config version the live sidecar was started with, and the pid that loaded it
        self.loaded_version: Optional[str] = None
        self.version_pid: Optional[int] = None
        self.mismatch: Optional[Tuple[Any, Any]] = None  # what the last TICK found supervisord disagreeing on
        self.rpc_factory = rpc_factory
        self.clock = clock
        self.cfg = m.Config(health_timeout=opts.health_timeout, failure_threshold=opts.failure_threshold)
        self.model = m.Model(since=clock())
        self.inbox: "queue.Queue[Any]" = queue.Queue()
        self.tracker = TreeTracker(MARKER_ENV, marker_value(opts.program, opts.config_path))
        self.redact = Redactor(secrets_from_config(opts.config_path))
        self.plan_changed = threading.Event()
        self.stopped = threading.Event()
        self.watched: Optional[int] = None
        self.watch_started = 0.0
        self.last_written_state: Optional[State] = None
        self.last_write = 0.0
        self.last_track = 0.0
        self.write_failing = False
        self._rpc: Any = None
        self.input_at = clock()

    # -- inputs from other threads --
    def on_event(self, header_line: str, payload: str) -> None:
        """Called by the protocol loop: queue our program's events, drop the rest."""
        name, body = parse_event(parse_headers(header_line), payload)
        group = self.opts.group or self.opts.program
        ev = event_input(name, body, self.opts.program, group)
        if ev is not None:
            self.inbox.put(ev)
        elif name.startswith("TICK"):
            self.inbox.put(RECONCILE)

    # -- lifecycle --
    def start_threads(self) -> None:
        threading.Thread(target=self._engine_loop, name="engine", daemon=True).start()
        threading.Thread(target=self._probe_loop, name="prober", daemon=True).start()

    def _engine_loop(self) -> None:
        try:
            self._recover()
        except Exception:
            self.log.exception("recovery failed; starting from supervisord's next events")
        while not self.stopped.is_set():
            # Tick often only while a health timeout can expire: idle CPU stays low.
            tick = TICK_EVERY if self.model.state is State.STARTING else IDLE_TICK_EVERY
            try:
                item = self.inbox.get(timeout=tick)
            except queue.Empty:
                item = m.Tick()
            try:
                self._feed(item)
                self._housekeeping()
            except Exception:
                self.log.exception("engine error (continuing)")

    def _recover(self) -> None:
        """Rebuild the state from supervisord and the previous state file."""
        prior = None
        try:
            prior = read_state(self.opts.state_file, max_age=float("inf"))
        except StateUnavailable:
            pass
        if prior is not None and prior.program == self.opts.program:
            self.last_written_state = prior.state
            self.counters = adopt_counters(prior.raw.get("counters"))
            self.loaded_version, self.version_pid = prior.raw.get("config_version"), prior.pid
            self.tracker.adopt(prior.raw.get("tree") or [])
        else:
            prior = None
        info = self._process_info(attempts=20)
        sup_state = info.get("statename") if info else None
        pid = info.get("pid") or None if info else None
        rec = m.Recover(
            supervisor_state=sup_state, pid=pid,
            prior_state=prior.state if prior else None,
            prior_since=prior.since if prior else None,
            prior_pid=prior.pid if prior else None,
            prior_error=prior.error if prior else None,
            prior_log_tail=prior.log_tail if prior else (),
        )
        self.log.info("recovering: supervisord says %s (pid %s); state file said %s",
                 sup_state, pid, prior.state.value if prior else "nothing")
        self._feed(rec)

    def _feed(self, item: Any) -> None:
        if item is RECONCILE:
            info = self._process_info()
            if not info:
                return
            seen = (info.get("statename"), info.get("pid") or None)
            missed = m.reconcile(self.model, *seen)
            if missed and self.mismatch != seen:
                # The events may still be on their way (supervisord sent the TICK before them):
                # replay only when the next tick finds the same difference. A lost event costs two ticks.
                self.mismatch = seen
                return
            self.mismatch = None
            if missed:
                self.log.warning("events were lost (supervisord says %s, pid %s): catching up", *seen)
            for ev in missed:
                self._feed(ev)
            return
        pending: List[Any] = [item]
        while pending:
            inp = pending.pop(0)
            if isinstance(inp, m.Died):
                info = self._process_info()
                inp = replace(inp, supervisor_state=info.get("statename") if info else None)
            elif isinstance(inp, m.ProcEvent) and inp.state == "STARTING" and inp.pid is None:
                # STARTING carries no pid; ask, so the pid is watched from its first second.
                info = self._process_info()
                if info and info.get("statename") == "STARTING" and info.get("pid"):
                    inp = replace(inp, pid=info["pid"])
            before = self.model
            if not isinstance(inp, m.Reaped):
                self.input_at = self.clock()  # what a reap may kill was born before this
            self.model, actions = m.step(self.model, inp, self.input_at, self.cfg)
            if self.model.state is not before.state:
                self._count(before.state, inp)
                self.log.info("state %s -> %s%s", before.state.value, self.model.state.value,
                         f" ({self.redact(self.model.error)})" if self.model.error else "")
            if self.model.probing != before.probing:
                self.plan_changed.set()
            for action in actions:
                fed_back = self._do(action)
                if fed_back is not None:
                    pending.append(fed_back)

    def _count(self, before: State, inp: Any) -> None:
        """Count a state change for the metrics (a recovery counts only a change from the old file)."""
        if isinstance(inp, m.Recover):
            if inp.prior_state is self.model.state:
                return
            before = inp.prior_state or State.STOPPED
        cause = crash_cause(self.model.halted, self.model.supervisor_state, isinstance(inp, m.Recover))
        count_transition(self.counters, before.value, self.model.state.value, cause)

    def _do(self, action: Any) -> Optional[Any]:
        """Carry out one action; return an input to feed back, if it produces one."""
        if isinstance(action, m.Write):
            self._write()
        elif isinstance(action, m.CaptureLogTail):
            self.redact = Redactor(secrets_from_config(self.opts.config_path))
            tail = self.redact.lines(tail_lines(self.opts.log_file, self.opts.tail_lines))
            self.model = replace(self.model, log_tail=tuple(tail))
        elif isinstance(action, m.Watch):
            self._watch(action.pid)
        elif isinstance(action, m.Reap):
            return self._reap()
        elif isinstance(action, m.StopProgram):
            self._rpc_call("stopProcess", self.opts.rpc_name, False)
        elif isinstance(action, m.StartProgram):
            self._rpc_call("startProcess", self.opts.rpc_name, False)
        elif isinstance(action, m.KillHung):
            killed = self.tracker.kill_all()
            self.log.warning("sidecar hung: sent SIGKILL to %d process(es) of its tree", killed)
        return None

    def _reap(self) -> m.Reaped:
        # The process supervisord runs now (it may have restarted it already)
        # is the new tree: spare it. A dead pid it still reports spares nothing.
        info = self._process_info()
        live = info.get("pid") if info and info.get("statename") in ("STARTING", "RUNNING") else None
        result = self.tracker.reap(self.opts.port, spare_root=live, before=self.input_at)
        if result.killed:
            self.log.warning("reaped %d orphaned process(es) of the sidecar: %s", len(result.killed),
                        " ".join(map(str, result.killed)))
        if result.survivors:
            self.log.error("could not kill: %s", " ".join(map(str, result.survivors)))
        if result.foreign_holders:
            self.log.error("port %d is held by a process outside the sidecar: %s", self.opts.port,
                      ", ".join(result.foreign_holders))
        return m.Reaped(killed=len(result.killed), foreign_holders=result.foreign_holders)

    def _housekeeping(self) -> None:
        now = self.clock()
        if self.watched is not None:
            fast = now - self.watch_started < TRACK_FAST_FOR
            if now - self.last_track >= (0.25 if fast else 5.0):
                self.last_track = now
                self.tracker.refresh()
        if now - self.last_write >= HEARTBEAT_EVERY:
            self._write()
            _keep_private(self.opts.log_file)

    # -- the state file --
    def document(self, now: float) -> Dict[str, Any]:
        """Return the state document of the contract's schema (plus ``tree``)."""
        mo = self.model
        return {
            "schema": SCHEMA,
            "program": self.opts.program,
            "state": mo.state.value,
            "since": mo.since,
            "updated_at": now,
            "heartbeat_at": now,
            "pid": mo.pid,
            "port": self.opts.port,
            "host": self.opts.host,
            "supervisor_state": mo.supervisor_state,
            "health": {
                "ok": mo.health_ok,
                "checked_at": mo.checked_at,
                "latency_ms": mo.latency_ms,
                "consecutive_failures": mo.failures,
            },
            "error": self.redact(mo.error) if mo.error else None,
            "log_tail": list(mo.log_tail),
            "listener_pid": os.getpid(),
            "log_file": self.opts.log_file,
            "tree": [[pid, ctime] for pid, ctime in self.tracker.identities()],
            "group": self.opts.group or self.opts.program,
            "counters": self.counters,
            "config_version": self.loaded_version,
        }

    def _write(self) -> None:
        now = self.clock()
        self.last_write = now
        doc = self.document(now)
        try:
            write_state(self.opts.state_file, doc)
            if self.model.state is not self.last_written_state:
                append_history(self.opts.state_file, {
                    "at": now, "from": self.last_written_state.value if self.last_written_state else None,
                    "state": doc["state"], "pid": doc["pid"], "supervisor_state": doc["supervisor_state"],
                    "error": doc["error"], "listener_pid": doc["listener_pid"],
                })
                self.last_written_state = self.model.state
        except OSError as exc:
            if not self.write_failing:
                self.log.error("cannot write %s: %s (will keep trying)", self.opts.state_file, exc.strerror or exc)
            self.write_failing = True
            return
        if self.write_failing:
            self.log.info("state file writable again")
        self.write_failing = False
        if self.metrics is not None:
            try:
                self.metrics.update(doc, now)
            except OSError as exc:
                self.log.warning("cannot write the metrics file %s: %s", self.metrics.path, exc.strerror or exc)

    # -- watching the pid --
    def _watch(self, pid: int) -> None:
        if pid != self.version_pid:  # a new process: it reads its config now
            self.loaded_version, self.version_pid = file_version(self.opts.config_path), pid
        self.tracker.track(pid)
        if self.watched == pid:
            return
        self.watched = pid
        self.watch_started = self.last_track = self.clock()
        threading.Thread(target=self._wait_for_exit, args=(pid,), name=f"watch-{pid}", daemon=True).start()

    def _wait_for_exit(self, pid: int) -> None:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            self.inbox.put(m.Died(pid))
            return
        except (AttributeError, OSError):
            fd = -1
        if fd >= 0:
            try:
                select.select([fd], [], [])
            finally:
                os.close(fd)
        else:  # no pidfd (old kernel): poll
            try:
                proc = psutil.Process(pid)
                while proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    time.sleep(0.05)
            except psutil.Error:
                pass
        self.inbox.put(m.Died(pid))

    # -- probing --
    def _probe_loop(self) -> None:
        prober = Prober(health_url(self.opts.host, self.opts.port))
        while not self.stopped.is_set():
            model = self.model
            if not model.probing:
                self.plan_changed.wait(1.0)
                self.plan_changed.clear()
                continue
            starting = model.state is not State.RUNNING
            interval = self.opts.starting_probe_interval if starting else self.opts.probe_interval
            t0 = time.monotonic()
            try:
                result = prober.probe(self.opts.probe_timeout)
            except Exception as exc:  # a probe must never kill the prober
                self.log.warning("probe failed oddly: %s", exc)
                time.sleep(interval)
                continue
            self.inbox.put(m.Probe(ok=result.ok, started_at=result.started_at,
                                   latency_ms=result.latency_ms, detail=result.detail))
            left = interval - (time.monotonic() - t0)
            if left > 0 and self.plan_changed.wait(left):
                self.plan_changed.clear()

    # -- XML-RPC --
    def _rpc_proxy(self) -> Any:
        if self._rpc is None:
            self._rpc = self.rpc_factory()
        return self._rpc

    def _rpc_call(self, method: str, *args: Any) -> Any:
        try:
            return getattr(self._rpc_proxy().supervisor, method)(*args)
        except Fault as exc:
            self.log.info("supervisor.%s: %s", method, exc.faultString)
        except Exception as exc:  # supervisord gone, busy or restarting
            self.log.warning("supervisor.%s failed: %s", method, exc)
            self._rpc = None
        return None

    def _process_info(self, attempts: int = 1) -> Optional[Dict[str, Any]]:
        for i in range(attempts):
            info = self._rpc_call("getProcessInfo", self.opts.rpc_name)
            if isinstance(info, dict):
                return info
            if i + 1 < attempts:
                time.sleep(0.25)
        return None


def _keep_private(path: str) -> None:
    """Keep the sidecar log owner-only, also after supervisord rotated it (it may hold keys)."""
    try:  # on the descriptor, never through a link (the listener may run as root)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and st.st_uid == os.geteuid() and st.st_mode & 0o077:
            os.fchmod(fd, stat.S_IMODE(st.st_mode) & ~0o077)
    except OSError:
        pass
    finally:
        os.close(fd)


def run(targets: List[ListenerOptions], stdin: IO[bytes], stdout: IO[str],
        rpc_factory: Optional[Callable[[], Any]] = None, metrics_file: Optional[str] = None) -> int:
    """Watch every sidecar of ``targets`` until supervisord closes our stdin.

    One protocol loop feeds all of them: each engine keeps only its own
    program's events, so several sidecars cost one listener process.
    """
    socket.setdefaulttimeout(10.0)  # XML-RPC to a wedged supervisord must not hang forever
    factory = rpc_factory or (lambda: childutils.getRPCInterface(os.environ))
    metrics = MetricsFile(metrics_file) if metrics_file else None
    listeners = [Listener(opts, factory, metrics=metrics) for opts in targets]
    for listener in listeners:
        listener.start_threads()

    def handle(header_line: str, payload: str) -> None:
        for listener in listeners:
            listener.on_event(header_line, payload)

    protocol_loop(stdin, stdout, handle)
    for listener in listeners:
        listener.stopped.set()
    log.info("stdin closed: supervisord is gone or stopping us")
    return 0
