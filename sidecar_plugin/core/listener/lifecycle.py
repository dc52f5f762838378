"""supervisord's word on the program: its state events, the watched pid's death, reaps, stops, reloads.

The state the listener publishes follows supervisord's events, with three
things supervisord cannot know: an exit seen first by the pid watch (the
event comes later, or never when events are dropped), an exit on purpose (an
operator's stop is ``stopped``, never ``crashed``) and a crash the listener
itself caused (health timeout, hang), which the stop that follows must not
overwrite. ``reconcile`` turns what supervisord says on a TICK into the
events that were lost.
"""

from __future__ import annotations

from dataclasses import replace
from typing import List, Optional

from sidecar_plugin.core.listener.actions import (
    Action, CaptureLogTail, Result, StartProgram, StopProgram, Write, only, watch,
)
from sidecar_plugin.core.listener.inputs import Died, ProcEvent, Reaped
from sidecar_plugin.core.listener.model import Model
from sidecar_plugin.core.listener.transitions import crash, enter, reap
from sidecar_plugin.names import LIVE_STATES, STOPPING_STATES, State

START_FAILURE = {
    "BACKOFF": "exited during start; supervisord will retry (BACKOFF)",
    "FATAL": "could not be started; supervisord gave up retrying (FATAL)",
}


def on_event(m: Model, ev: ProcEvent, now: float) -> Result:
    """Follow one PROCESS_STATE event of the program."""
    s = ev.state
    if s == "STARTING":
        return _on_starting(m, ev, now)
    if s == "RUNNING":
        m = replace(m, supervisor_state=s, pid=ev.pid if ev.pid is not None else m.pid)
        actions = watch(m.pid)
        if m.state is not State.RUNNING and m.halted is None and not m.stopping:
            m = enter(m, State.STARTING, now, starting_since=m.starting_since or now)
        return m, actions + [Write()]
    if s in ("STOPPING", "STOPPED"):
        m = replace(m, supervisor_state=s, stopping=True, pid=None if s == "STOPPED" else m.pid)
        if m.halted is None:
            m = enter(m, State.STOPPED, now, error=None, log_tail=())
        return m, [Write()] if s == "STOPPING" else [reap(m, ev.at, now)]
    if s in ("EXITED", "BACKOFF", "FATAL"):
        return _on_exit_event(m, ev, now)
    return replace(m, supervisor_state=s or m.supervisor_state), [Write()]


def _on_starting(m: Model, ev: ProcEvent, now: float) -> Result:
    if (ev.pid is not None and ev.pid == m.pid and m.state in (State.STARTING, State.RUNNING)
            and not m.stopping and m.halted is None):
        # The start a recovering listener already saw, delivered late: not a new start.
        return m, []
    m = enter(m, State.STARTING, now, supervisor_state="STARTING", pid=ev.pid, starting_since=now,
              failures=0, health_ok=None, error=None, log_tail=(), stopping=False, halted=None,
              port_free=None, answered_at=None, stopped_at=None, cpu=None, cpu_base=None, workers=(),
              accepted_at=None, progress_at=None, progress_cpu=None, log_size=None, foreign_at=None,
              port_holder=None, elsewhere_at=None, elsewhere=())
    return m, watch(ev.pid) + [Write()]


def _on_exit_event(m: Model, ev: ProcEvent, now: float) -> Result:
    s = ev.state
    m = replace(m, supervisor_state=s, pid=None)
    if m.stopping and s == "EXITED":
        m = enter(m, State.STOPPED, now) if m.halted is None else m
        return m, [reap(m, ev.at, now)]
    actions: List[Action] = [CaptureLogTail(), Write(), reap(m, ev.at, now)]
    if m.state is State.CRASHED:
        # Already recorded (pid watch, timeout or hang): keep the time it happened;
        # supervisord's verdict on a failed start is the better reason.
        if m.halted == "hung" and s == "EXITED":
            actions.append(StartProgram())
        if m.halted is None and s in ("BACKOFF", "FATAL"):
            m = replace(m, error=START_FAILURE[s])
        return m, actions
    if s == "EXITED":
        how = "with its expected exit code" if ev.expected else "unexpectedly"
        return crash(m, now, f"exited {how} while {(ev.from_state or 'running').lower()}"), actions
    return crash(m, now, START_FAILURE[s]), actions


def on_died(m: Model, d: Died, now: float) -> Result:
    """The watched pid is gone: a crash, unless supervisord is stopping it on purpose."""
    if d.pid != m.pid:
        return m, []
    if m.stopping or d.supervisor_state in STOPPING_STATES:
        m = replace(m, stopping=True)
        return m, [reap(replace(m, pid=None), d.at, now)]
    if m.state is State.CRASHED:
        m = replace(m, pid=None)
        return m, [reap(m, d.at, now)]
    m = crash(m, now, f"exited unexpectedly (pid {d.pid})", pid=None, health_ok=None)
    return m, [CaptureLogTail(), Write(), reap(m, d.at, now)]


def on_reaped(m: Model, r: Reaped) -> Result:
    """Record whether the port is free; a crash says who else holds it."""
    m = replace(m, port_free=r.port_free)
    if r.foreign_holders and m.state is State.CRASHED and m.halted is None:
        who = ", ".join(r.foreign_holders)
        note = f"; the port is held by another process ({who}), so it cannot start"
        if note not in (m.error or ""):
            return replace(m, error=(m.error or "crashed") + note), [Write()]
    return m, [Write()]


def on_operator_stop(m: Model, now: float) -> Result:
    """An operator's stop: ``stopped`` at once, no retry; stop it here too if it runs (a retry just started it)."""
    # Live, or about to be: a retry the listener asked for may have been spawned already.
    live = m.supervisor_state in LIVE_STATES + ("BACKOFF",) or m.retry_asked_at is not None
    if m.state is State.STOPPED and not live:
        return m, []
    m = enter(m, State.STOPPED, now, error=None, log_tail=(), halted=None, stopping=m.stopping or live)
    return m, only(live, StopProgram()) + [Write()]


def follow_reload(m: Model) -> Result:
    """Follow a rolling worker replacement (SIGHUP): the main pid stays, its workers are new.

    When every worker was born after litellm.yaml last changed, every one of
    them read that version: it is the version the sidecar serves.
    """
    seen = m.config_seen
    if (seen is None or not m.workers or m.pid is None or min(m.workers) < seen[1]
            or seen[0] == m.config_version):
        return m, []
    return replace(m, config_version=seen[0]), [Write()]


def reconcile(m: Model, statename: Optional[str], pid: Optional[int]) -> List[ProcEvent]:
    """Return the events that bring the model in line with what supervisord says now.

    supervisord drops events when a listener's buffer overflows (a storm of
    other programs' events): checking on each TICK makes a lost event cost
    at most two ticks (the listener waits for a second one: events may still be
    on their way), never a state stuck forever.
    """
    if not statename or statename == m.supervisor_state and (statename != "RUNNING" or pid == m.pid):
        return []
    if statename in LIVE_STATES:
        if m.supervisor_state in LIVE_STATES and not m.stopping and (pid == m.pid or m.pid is None):
            return [ProcEvent(statename, pid=pid)]
        events = [ProcEvent("STARTING", pid=pid)]
        return events + ([ProcEvent("RUNNING", pid=pid)] if statename == "RUNNING" else [])
    if statename in ("STOPPED", "EXITED", "FATAL", "BACKOFF", "STOPPING"):
        return [ProcEvent(statename, pid=None, from_state=m.supervisor_state)]
    return []
