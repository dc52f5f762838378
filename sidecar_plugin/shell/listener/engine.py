"""The supervisord event listener: the imperative shell around ``core.listener.machine``.

Three kinds of thread, so that no event waits on a probe and no probe waits on
an event (superlance's ``httpok`` probes inside the event handler, on ticks):

- the protocol loop (main thread) reads each event, queues it and acknowledges
  it at once, whatever its payload;
- the prober (``shell.listener.probe_schedule``) starts a probe on its own schedule, each in its own
  thread with an overall deadline: a busy sidecar's late answers still arrive and count;
- a pid watcher per sidecar pid wakes the moment that process exits (Linux
  pidfd), well before supervisord's one-second loop notices.

One engine thread owns the model: it feeds every input to ``machine.step`` and
carries out the actions (state file, ``shell.processes.reap``, ``shell.supervisord.link``), samples the
tree (``shell.listener.observe``; its memory: ``shell.listener.memory``, deciding by ``core.listener.budget``)
and the heartbeat. It decides nothing itself: every decision is the core's.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import replace
from typing import Any, Callable, Dict, Optional

from sidecar_plugin.core.listener import machine as m
from sidecar_plugin.core.listener.budget import BudgetConfig, restored
from sidecar_plugin.core.listener.events import command_input, event_input
from sidecar_plugin.core.listener.lifecycle import answered
from sidecar_plugin.core.listener.model import config_of
from sidecar_plugin.core.listener.recovery import recover_input
from sidecar_plugin.core.options.listen_args import ListenerOptions
from sidecar_plugin.core.state.schema import state_document
from sidecar_plugin.names import HEARTBEAT_EVERY, MARKER_ENV, OWNER_SUPERVISORD, State, health_socket_name, marker_value
from sidecar_plugin.shell.listener import supervisord_socket
from sidecar_plugin.shell.files.outfiles import file_version, keep_private
from sidecar_plugin.shell.files.keyfile import KeyFileCache
from sidecar_plugin.shell.supervisord.link import SupervisorLink
from sidecar_plugin.shell.listener.memory import MemoryKeeper
from sidecar_plugin.shell.listener.metrics import MetricsFile
from sidecar_plugin.shell.listener.observe import TreeObserver
from sidecar_plugin.shell.listener.probe import LIVELINESS_PATH, Prober, health_url
from sidecar_plugin.shell.listener.probe_schedule import probe_loop
from sidecar_plugin.shell.processes.tree_tracker import TreeTracker
from sidecar_plugin.shell.processes.reap import reap
from sidecar_plugin.shell.listener.redact import Redactor, secrets_from_config, tail_lines
from sidecar_plugin.shell.listener.publish import Publisher
from sidecar_plugin.shell.files.statefile import prior_state
from sidecar_plugin.shell.processes.watch import wait_for_exit

log = logging.getLogger("sidecar_plugin.listener")

TICK_EVERY = 0.1
IDLE_TICK_EVERY = 0.5
TRACK_FAST_FOR = 30.0
SIGNS_EVERY = 1.0


class Listener:
    """Owns the model; everything that touches the world happens here (collaborators passed in, as httpok's)."""

    def __init__(self, opts: ListenerOptions, rpc_factory: Callable[[], Any],
                 clock: Callable[[], float] = time.time, metrics: Optional[MetricsFile] = None) -> None:
        self.opts = opts
        self.log = logging.LoggerAdapter(log, {"program": opts.program})
        self.clock = clock
        self.cfg = config_of(opts)
        self.model = m.Model(since=clock())
        self.inbox: "queue.Queue[Any]" = queue.Queue()
        self.tracker = TreeTracker(MARKER_ENV, marker_value(opts.program, opts.config_path))
        self.redact = Redactor(secrets_from_config(opts.config_path))
        self.key_files = KeyFileCache()
        self.plan_changed = threading.Event()
        self.stopped = threading.Event()
        self.watched: Optional[int] = None
        self.watch_started = 0.0
        self.publisher = Publisher(opts.state_file, metrics, self.log)
        self.last_write = 0.0
        self.last_track = 0.0
        self.last_signs = 0.0
        owner = opts.port_owner == OWNER_SUPERVISORD
        self.prober = Prober(health_url(opts.host, opts.port), private=health_socket_name(
            opts.program, opts.config_path) if owner else "")
        self.drainer = supervisord_socket.Drainer(self.log) if owner else None
        self.observer = TreeObserver(opts.config_path, opts.port, self.prober.recent_ports, opts.log_file, opts.host,
                                     shared_port=owner)
        self.link = SupervisorLink(rpc_factory, opts.rpc_name, self.log)
        self.memory = MemoryKeeper(BudgetConfig(opts.memory_budget, opts.memory_every), self.prober.private,
                                   opts.state_file, self.log)
        self.hold = supervisord_socket.PortHold(opts, self.link, self.log)

    # -- inputs from other threads --
    def on_event(self, name: str, body: Dict[str, str]) -> None:
        """Called by the protocol loop: queue our program's events and TICKs, drop the rest."""
        group, at = self.opts.group or self.opts.program, self.clock()
        ev = (event_input(name, body, self.opts.program, group, at=at)
              or command_input(name, body, self.opts.program, at))
        if ev is not None:
            self.inbox.put(ev)
        elif name.startswith("TICK"):
            self.inbox.put(m.SupervisorTick())

    # -- lifecycle --
    def start_threads(self) -> None:
        threading.Thread(target=self._engine_loop, name="engine", daemon=True).start()
        threading.Thread(target=probe_loop, name="prober", daemon=True,
                         args=(self.prober, self.opts, lambda: self.model, self.inbox.put, self.plan_changed,
                               self.stopped, self.log)).start()

    def _engine_loop(self) -> None:
        try:
            self._recover()
        except Exception:
            self.log.exception("recovery failed; starting from supervisord's next events")
        next_tick = time.monotonic()
        while not self.stopped.is_set():
            # Tick often only while a health timeout can expire: idle CPU stays low. A tick is
            # due by the clock, not when the inbox is idle: while the sidecar starts, probe
            # results arrive every 0.1 s and would otherwise keep the timers from ever firing.
            tick = TICK_EVERY if self.model.state is State.STARTING else IDLE_TICK_EVERY
            next_tick = min(next_tick, time.monotonic() + tick)
            try:
                items = [self.inbox.get(timeout=max(0.0, next_tick - time.monotonic()))]
            except queue.Empty:
                items = []
            if time.monotonic() >= next_tick:
                items.append(m.Tick())
                next_tick = time.monotonic() + tick
            for item in items:
                try:
                    self.feed(item)
                except Exception:
                    self.log.exception("engine error (continuing)")
            try:
                self._housekeeping()
            except Exception:
                self.log.exception("engine error (continuing)")

    def _recover(self) -> None:
        """Rebuild the state from supervisord and the previous state file."""
        prior = prior_state(self.opts.state_file, self.opts.program)
        if prior is not None:
            self.publisher.last_state = prior.state
            self.tracker.adopt(prior.raw.get("tree") or [])
            self.memory.budget = restored(prior.raw)  # the replacements counted so far
        info = self.link.process_info(attempts=20)
        sup_state = info.get("statename") if info else None
        pid = info.get("pid") or None if info else None
        self.log.info("recovering: supervisord says %s (pid %s); state file said %s",
                      sup_state, pid, prior.state.value if prior else "nothing")
        self.feed(recover_input(prior, sup_state, pid))

    def feed(self, inp: Any) -> None:
        """Step the machine with ``inp`` and carry out its actions.

        What an action produces (an answer, a log tail, a reap result) is fed
        back at once, before the next action: the write that follows a
        ``CaptureLogTail`` must already hold the tail.
        """
        before = self.model
        self.model, actions = m.step(self.model, inp, self.clock(), self.cfg)
        if self.model.state is not before.state:
            self.log.info("state %s -> %s%s", before.state.value, self.model.state.value,
                          f" ({self.redact(self.model.error)})" if self.model.error else "")
        if self.model.probing != before.probing:
            self.plan_changed.set()
        supervisord_socket.after_step(self.drainer, before, self.model)
        for action in actions:
            fed_back = self._do(action)
            if fed_back is not None:
                self.feed(fed_back)

    def _do(self, action: Any) -> Optional[Any]:
        """Carry out one action; return an input to feed back, if it produces one."""
        if isinstance(action, m.Write):
            self._write()
        elif isinstance(action, m.CaptureLogTail):
            self.redact = Redactor(secrets_from_config(self.opts.config_path))
            return m.LogTail(tuple(self.redact.lines(tail_lines(self.opts.log_file, self.opts.tail_lines,
                                                                        skip=LIVELINESS_PATH))))
        elif isinstance(action, m.Watch):
            self._watch(action.pid)
            return m.ConfigLoaded(action.pid, file_version(self.opts.config_path))
        elif isinstance(action, m.Reap):
            return reap(self.tracker, self.link, self.opts.port, action, self.log, self.drainer, self.model.stopping)
        elif isinstance(action, (m.Ask, m.Query)):
            return self._answer(action)
        elif isinstance(action, m.Identify):
            own, holder = supervisord_socket.who_answers(self.opts, action.probe, self.model.pid)
            if not own:
                self.log.warning("health answer on port %d is not the sidecar's: %s", self.opts.port, holder)
            return replace(action.probe, own=own, holder=holder)
        elif isinstance(action, m.StopProgram):
            self.link.call("stopProcess", self.opts.rpc_name, False)
        elif isinstance(action, m.StartProgram):
            self.link.call("startProcess", self.opts.rpc_name, False)
        elif isinstance(action, m.KillHung):
            killed = self.tracker.kill_all()
            self.log.warning("sidecar hung: sent SIGKILL to %d process(es) of its tree", killed)
        return None

    def _answer(self, action: Any) -> Optional[Any]:
        """Ask supervisord what the machine wants to know; no answer: the input is judged without it."""
        info = self.link.process_info() or {}
        statename, pid = info.get("statename"), info.get("pid") or None
        if isinstance(action, m.Query):
            return m.Observed(statename, pid) if info else None
        return answered(action.inp, statename, pid)

    def _housekeeping(self) -> None:
        now = self.clock()
        if self.watched is not None:
            fast = now - self.watch_started < TRACK_FAST_FOR
            if now - self.last_track >= (0.25 if fast else 5.0):
                self.last_track = now
                self.tracker.refresh()
        if now - self.last_signs >= SIGNS_EVERY:
            self.last_signs = now
            self._observe_tree()
        if self.memory.tick(self.model, now) or now - self.last_write >= HEARTBEAT_EVERY:
            self._write()
            keep_private(self.opts.log_file)

    def _observe_tree(self) -> None:
        """Feed the machine what the tree and the config file say: stopped, CPU, workers, config changes."""
        seen = self.observer.config_input()
        if seen is not None:
            self.feed(seen)
        for inp in self.observer.tree_inputs(self.model, self.clock()):
            self.feed(inp)

    # -- the state file --
    def _write(self) -> None:
        now = self.clock()
        self.last_write = now
        error = self.redact(self.model.error) if self.model.error else None
        doc = state_document(self.model, self.opts, now, os.getpid(), self.tracker.identities(), error,
                             self.key_files.lookup(self.opts.config_path))
        doc.update(memory=self.memory.document(), **self.hold.fields())
        self.publisher.publish(doc, self.model.state, now)

    # -- watching the pid --
    def _watch(self, pid: int) -> None:
        self.tracker.track(pid)
        if self.watched == pid:
            return
        self.hold.ask()  # each start: the plugin holds its port, or the state says why not
        self.watched = pid
        self.watch_started = self.last_track = self.clock()

        def watch() -> None:
            wait_for_exit(pid)
            self.inbox.put(m.Died(pid, at=self.clock()))

        threading.Thread(target=watch, name=f"watch-{pid}", daemon=True).start()
