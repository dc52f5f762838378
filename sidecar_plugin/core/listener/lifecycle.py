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
from typing import Any, List, Optional

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


def on_event(model: Model, ev: ProcEvent, now: float) -> Result:
    """Follow one PROCESS_STATE event of the program."""
    s = ev.state
    if s in LIVE_STATES and ev.pid is not None and ev.pid == model.died_pid:
        # supervisord's STARTING or RUNNING of a process the pid watch already saw die (its RUNNING
        # delivered after the death): no start of anything; the exit event that follows is judged as ever.
        return model, []
    if s == "STARTING":
        return _on_starting(model, ev, now)
    if s == "RUNNING":
        model = replace(model, supervisor_state=s, pid=ev.pid if ev.pid is not None else model.pid)
        actions = watch(model.pid)
        if model.state is not State.RUNNING and model.halted is None and not model.stopping:
            model = enter(model, State.STARTING, now, starting_since=model.starting_since or now)
        return model, actions + [Write()]
    if s in ("STOPPING", "STOPPED"):
        model = replace(model, supervisor_state=s, stopping=True, pid=None if s == "STOPPED" else model.pid)
        if model.halted is None:
            model = enter(model, State.STOPPED, now, error=None, log_tail=())
        return model, [Write()] if s == "STOPPING" else [reap(model, ev.at, now)]
    if s in ("EXITED", "BACKOFF", "FATAL"):
        return _on_exit_event(model, ev, now)
    return replace(model, supervisor_state=s or model.supervisor_state), [Write()]


def _on_starting(model: Model, ev: ProcEvent, now: float) -> Result:
    if (ev.pid is not None and ev.pid == model.pid and model.state in (State.STARTING, State.RUNNING)
            and not model.stopping and model.halted is None):
        # The start a recovering listener already saw, delivered late: not a new start.
        return model, []
    model = enter(model, State.STARTING, now, supervisor_state="STARTING", pid=ev.pid, starting_since=now,
              failures=0, health_ok=None, error=None, log_tail=(), stopping=False, halted=None,
              port_free=None, answered_at=None, stopped_at=None, cpu=None, cpu_base=None, workers=(),
              accepted_at=None, progress_at=None, progress_cpu=None, log_size=None, foreign_at=None,
              port_holder=None, elsewhere_at=None, elsewhere=())
    return model, watch(ev.pid) + [Write()]


def _on_exit_event(model: Model, ev: ProcEvent, now: float) -> Result:
    s = ev.state
    if ev.pid is not None and model.pid is not None and ev.pid != model.pid:
        # The exit of a process already replaced, delivered late (its death was seen by the pid watch and
        # the replacement by a TICK's question): counted once, when it happened; never a crash of the new one.
        return model, []
    model = replace(model, supervisor_state=s, pid=None)
    if model.stopping and s == "EXITED":
        model = enter(model, State.STOPPED, now) if model.halted is None else model
        return model, [reap(model, ev.at, now)]
    actions: List[Action] = [CaptureLogTail(), Write(), reap(model, ev.at, now)]
    if model.state is State.CRASHED:
        # Already recorded (pid watch, timeout or hang): keep the time it happened;
        # supervisord's verdict on a failed start is the better reason.
        if model.halted == "hung" and s == "EXITED":
            actions.append(StartProgram())
        if model.halted is None and s in ("BACKOFF", "FATAL"):
            model = replace(model, error=START_FAILURE[s])
        return model, actions
    if s == "EXITED":
        how = "with its expected exit code" if ev.expected else "unexpectedly"
        return crash(model, now, f"exited {how} while {(ev.from_state or 'running').lower()}"), actions
    return crash(model, now, START_FAILURE[s]), actions


def answered(inp: Any, statename: Optional[str], pid: Optional[int]) -> Any:
    """Return ``inp`` (an asked ProcEvent or Died) with what supervisord answered filled in.

    A STARTING event carries no pid: while supervisord says the program lives (STARTING, or already
    RUNNING when the event was delivered late), its pid is the one that event started, so a late STARTING
    of the process the listener already follows is no new start.
    """
    if isinstance(inp, Died):
        return replace(inp, supervisor_state=statename, supervisor_pid=pid, asked=True)
    return replace(inp, pid=pid if statename in LIVE_STATES else inp.pid, asked=True)


def on_died(model: Model, d: Died, now: float) -> Result:
    """The watched pid is gone: a crash, unless supervisord is stopping it on purpose."""
    if d.pid != model.pid:
        return model, []
    model = replace(model, died_pid=d.pid)
    if d.supervisor_state in LIVE_STATES and d.supervisor_pid not in (None, d.pid):
        # supervisord already runs another process: it saw this exit, and its event (STOPPING/STOPPED for
        # a stop, EXITED for a crash; still in the queue) judges it. Asked late, a stop followed by a start
        # (apply's restart) looks like a crash here; the event's verdict is the right one. Until it comes
        # supervisord's state is unknown: nothing is probed, and a TICK's replay (the event dropped) goes
        # through STARTING, judged as a start. The old tree's survivors are reaped now, as for any exit (a
        # crash's orphans serve until the new process does). A crash whose EXITED supervisord drops is not
        # counted: without its event a stop and a crash look the same.
        model = replace(model, pid=None, supervisor_state=None)
        return model, [replace(reap(model, d.at, now), spare=d.supervisor_pid)]
    if model.stopping or d.supervisor_state in STOPPING_STATES:
        model = replace(model, stopping=True)
        return model, [reap(replace(model, pid=None), d.at, now)]
    if model.state is State.CRASHED:
        model = replace(model, pid=None)
        return model, [reap(model, d.at, now)]
    model = crash(model, now, f"exited unexpectedly (pid {d.pid})", pid=None, health_ok=None)
    return model, [CaptureLogTail(), Write(), reap(model, d.at, now)]


def on_reaped(model: Model, r: Reaped) -> Result:
    """Record whether the port is free; a crash says who else holds it."""
    model = replace(model, port_free=r.port_free)
    if r.foreign_holders and model.state is State.CRASHED and model.halted is None:
        who = ", ".join(r.foreign_holders)
        note = f"; the port is held by another process ({who}), so it cannot start"
        if note not in (model.error or ""):
            return replace(model, error=(model.error or "crashed") + note), [Write()]
    return model, [Write()]


def on_operator_stop(model: Model, now: float) -> Result:
    """An operator's stop: ``stopped`` at once, no retry; stop it here too if it runs (a retry just started it)."""
    # Live, or about to be: a retry the listener asked for may have been spawned already.
    live = model.supervisor_state in LIVE_STATES + ("BACKOFF",) or model.retry_asked_at is not None
    if model.state is State.STOPPED and not live:
        return model, []
    model = enter(model, State.STOPPED, now, error=None, log_tail=(), halted=None, stopping=model.stopping or live)
    return model, only(live, StopProgram()) + [Write()]


def follow_reload(model: Model) -> Result:
    """Follow a rolling worker replacement (SIGHUP): the main pid stays, its workers are new.

    When every worker was born after litellm.yaml last changed, every one of
    them read that version: it is the version the sidecar serves.
    """
    seen = model.config_seen
    if (seen is None or not model.workers or model.pid is None or min(model.workers) < seen[1]
            or seen[0] == model.config_version):
        return model, []
    return replace(model, config_version=seen[0]), [Write()]


def reconcile(model: Model, statename: Optional[str], pid: Optional[int]) -> List[ProcEvent]:
    """Return the events that bring the model in line with what supervisord says now.

    supervisord drops events when a listener's buffer overflows (a storm of
    other programs' events): checking on each TICK makes a lost event cost
    at most two ticks (the listener waits for a second one: events may still be
    on their way), never a state stuck forever.
    """
    if not statename or statename == model.supervisor_state and (statename != "RUNNING" or pid == model.pid):
        return []
    if statename in LIVE_STATES:
        if model.supervisor_state in LIVE_STATES and not model.stopping and (pid == model.pid or model.pid is None):
            return [ProcEvent(statename, pid=pid)]
        events = [ProcEvent("STARTING", pid=pid)]
        return events + ([ProcEvent("RUNNING", pid=pid)] if statename == "RUNNING" else [])
    if statename in ("STOPPED", "EXITED", "FATAL", "BACKOFF", "STOPPING"):
        return [ProcEvent(statename, pid=None, from_state=model.supervisor_state)]
    return []
