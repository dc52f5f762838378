"""The listener's decisions, as a pure state machine.

``step(model, input, now, config) -> (model, actions)``: inputs are supervisord
events, probe results, the death of the watched pid, reap results and timer
ticks; actions are what the shell (``listener.py``) must carry out. No process,
no clock, no I/O here, so every transition is unit-tested as data.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import List, Optional, Tuple, Union

from sidecar_plugin.statefile import State

STOPPING_STATES = ("STOPPING", "STOPPED")
LIVE_STATES = ("STARTING", "RUNNING")


@dataclass(frozen=True)
class Config:
    """The knobs of the machine (the listener's command-line options)."""

    health_timeout: float = 20.0
    failure_threshold: int = 3


@dataclass(frozen=True)
class Model:
    """What the listener knows; ``state`` and friends are what it publishes."""

    state: State = State.STOPPED
    since: float = 0.0
    pid: Optional[int] = None
    supervisor_state: Optional[str] = None
    health_ok: Optional[bool] = None
    checked_at: Optional[float] = None
    latency_ms: Optional[float] = None
    failures: int = 0
    error: Optional[str] = None
    log_tail: Tuple[str, ...] = ()
    starting_since: Optional[float] = None
    # True from supervisord's STOPPING on: exits are then on purpose.
    stopping: bool = False
    # Why the listener itself took the sidecar down ("timeout", "hung"), if it did:
    # the crash it recorded must not be overwritten by the stop that follows.
    halted: Optional[str] = None

    @property
    def probing(self) -> bool:
        """Whether health probes mean anything now."""
        return self.supervisor_state in LIVE_STATES and not self.stopping and self.halted is None


# ---- inputs -----------------------------------------------------------------

@dataclass(frozen=True)
class ProcEvent:
    """A PROCESS_STATE_* event of our program (``state`` without the prefix)."""

    state: str
    pid: Optional[int] = None
    expected: Optional[bool] = None
    from_state: Optional[str] = None


@dataclass(frozen=True)
class Probe:
    """One health probe; ``started_at`` lets late results of old probes be ignored."""

    ok: bool
    started_at: float
    latency_ms: Optional[float] = None
    detail: str = ""


@dataclass(frozen=True)
class Died:
    """The watched main pid exited; ``supervisor_state`` as supervisord saw it then."""

    pid: int
    supervisor_state: Optional[str] = None


@dataclass(frozen=True)
class Reaped:
    """Outcome of a reap: what was killed and who else still listens on the port."""

    killed: int = 0
    foreign_holders: Tuple[str, ...] = ()


@dataclass(frozen=True)
class Tick:
    """Time passed; timers (the health timeout) are judged here."""


@dataclass(frozen=True)
class Recover:
    """The listener (re)started: what supervisord says and what the old file said."""

    supervisor_state: Optional[str]
    pid: Optional[int]
    prior_state: Optional[State] = None
    prior_since: Optional[float] = None
    prior_pid: Optional[int] = None
    prior_error: Optional[str] = None
    prior_log_tail: Tuple[str, ...] = ()


Input = Union[ProcEvent, Probe, Died, Reaped, Tick, Recover]

# ---- actions ----------------------------------------------------------------


@dataclass(frozen=True)
class Write:
    """Write the state file (and a history line when the state changed)."""


@dataclass(frozen=True)
class CaptureLogTail:
    """Read the last lines of the sidecar log (redacted) into ``log_tail``."""


@dataclass(frozen=True)
class Watch:
    """Watch ``pid`` for exit and track its process tree."""

    pid: int


@dataclass(frozen=True)
class Reap:
    """Kill what survives of the tracked tree, check the port, feed back Reaped."""


@dataclass(frozen=True)
class StopProgram:
    """Ask supervisord to stop the program (it never became healthy)."""


@dataclass(frozen=True)
class KillHung:
    """SIGKILL the whole tree: a hung process ignores SIGTERM; supervisord restarts it."""


@dataclass(frozen=True)
class StartProgram:
    """Ask supervisord to start the program (harmless if it already is)."""


Action = Union[Write, CaptureLogTail, Watch, Reap, StopProgram, KillHung, StartProgram]
Result = Tuple[Model, List[Action]]


def _enter(m: Model, state: State, now: float, **changes: object) -> Model:
    """Move to ``state``; ``since`` changes only when the state does."""
    since = m.since if m.state is state else now
    return replace(m, state=state, since=since, **changes)


def step(m: Model, inp: Input, now: float, cfg: Config = Config()) -> Result:
    """Return the next model and the actions the shell must carry out, in order."""
    if isinstance(inp, ProcEvent):
        return _on_event(m, inp, now)
    if isinstance(inp, Probe):
        return _on_probe(m, inp, now, cfg)
    if isinstance(inp, Died):
        return _on_died(m, inp, now)
    if isinstance(inp, Reaped):
        return _on_reaped(m, inp)
    if isinstance(inp, Tick):
        return _on_tick(m, now, cfg)
    if isinstance(inp, Recover):
        return _on_recover(m, inp, now)
    return m, []


def _crash(m: Model, now: float, error: str, **changes: object) -> Model:
    return _enter(m, State.CRASHED, now, error=error, **changes)


def _on_event(m: Model, ev: ProcEvent, now: float) -> Result:
    s = ev.state
    if s == "STARTING":
        if (ev.pid is not None and ev.pid == m.pid and m.state in (State.STARTING, State.RUNNING)
                and not m.stopping and m.halted is None):
            # The start a recovering listener already saw, delivered late: not a new start.
            return m, []
        m = _enter(m, State.STARTING, now, supervisor_state=s, pid=ev.pid, starting_since=now,
                   failures=0, health_ok=None, error=None, log_tail=(), stopping=False, halted=None)
        return m, ([Watch(ev.pid)] if ev.pid is not None else []) + [Write()]
    if s == "RUNNING":
        m = replace(m, supervisor_state=s, pid=ev.pid if ev.pid is not None else m.pid)
        actions: List[Action] = [Watch(m.pid)] if m.pid is not None else []
        if m.state is not State.RUNNING and m.halted is None and not m.stopping:
            m = _enter(m, State.STARTING, now, starting_since=m.starting_since or now)
        return m, actions + [Write()]
    if s == "STOPPING":
        m = replace(m, supervisor_state=s, stopping=True)
        if m.halted is None:
            m = _enter(m, State.STOPPED, now, error=None, log_tail=())
        return m, [Write()]
    if s == "STOPPED":
        m = replace(m, supervisor_state=s, stopping=True, pid=None)
        if m.halted is None:
            m = _enter(m, State.STOPPED, now, error=None, log_tail=())
        return m, [Reap()]
    if s in ("EXITED", "BACKOFF", "FATAL"):
        return _on_exit_event(m, ev, now)
    return replace(m, supervisor_state=s or m.supervisor_state), [Write()]


def _on_exit_event(m: Model, ev: ProcEvent, now: float) -> Result:
    s = ev.state
    m = replace(m, supervisor_state=s, pid=None)
    if m.stopping and s == "EXITED":
        m = _enter(m, State.STOPPED, now) if m.halted is None else m
        return m, [Reap()]
    actions: List[Action] = [CaptureLogTail(), Write(), Reap()]
    if m.state is State.CRASHED:
        # Already recorded (pid watch, timeout or hang): keep the time it happened;
        # supervisord's verdict on a failed start is the better reason.
        if m.halted == "hung" and s == "EXITED":
            actions.append(StartProgram())
        if m.halted is None and s in ("BACKOFF", "FATAL"):
            m = replace(m, error=_START_FAILURE[s])
        return m, actions
    if s == "EXITED":
        how = "with its expected exit code" if ev.expected else "unexpectedly"
        return _crash(m, now, f"exited {how} while {_human(ev.from_state)}"), actions
    return _crash(m, now, _START_FAILURE[s]), actions


_START_FAILURE = {
    "BACKOFF": "exited during start; supervisord will retry (BACKOFF)",
    "FATAL": "could not be started; supervisord gave up retrying (FATAL)",
}


def _human(from_state: Optional[str]) -> str:
    return (from_state or "running").lower()


def _on_died(m: Model, d: Died, now: float) -> Result:
    if d.pid != m.pid:
        return m, []
    if m.stopping or d.supervisor_state in STOPPING_STATES:
        return replace(m, stopping=True), [Reap()]
    if m.state is State.CRASHED:
        return replace(m, pid=None), [Reap()]
    m = _crash(m, now, f"exited unexpectedly (pid {d.pid})", pid=None, health_ok=None)
    return m, [CaptureLogTail(), Write(), Reap()]


def _on_reaped(m: Model, r: Reaped) -> Result:
    if r.foreign_holders and m.state is State.CRASHED and m.halted is None:
        who = ", ".join(r.foreign_holders)
        note = f"; the port is held by another process ({who}), so it cannot start"
        if note not in (m.error or ""):
            return replace(m, error=(m.error or "crashed") + note), [Write()]
    return m, [Write()]


def _on_probe(m: Model, p: Probe, now: float, cfg: Config) -> Result:
    if p.started_at < m.since or not m.probing:
        return m, []
    if p.ok:
        m = replace(m, health_ok=True, checked_at=now, latency_ms=p.latency_ms, failures=0)
        if m.state is State.STARTING:
            return _enter(m, State.RUNNING, now, starting_since=None), [Write()]
        return m, []
    m = replace(m, health_ok=False, checked_at=now, latency_ms=p.latency_ms, failures=m.failures + 1)
    if m.state is State.RUNNING and m.failures >= cfg.failure_threshold:
        why = f"stopped answering health checks ({m.failures} failures in a row: {p.detail}); restarting it"
        return _crash(m, now, why, halted="hung"), [CaptureLogTail(), Write(), KillHung()]
    return m, []


def _on_tick(m: Model, now: float, cfg: Config) -> Result:
    if (m.state is State.STARTING and m.halted is None and not m.stopping
            and m.starting_since is not None and now - m.starting_since >= cfg.health_timeout):
        why = f"did not become healthy within {cfg.health_timeout:g} s"
        return _crash(m, now, why, halted="timeout"), [CaptureLogTail(), Write(), StopProgram()]
    return m, []


def _on_recover(m: Model, r: Recover, now: float) -> Result:
    """Rebuild from supervisord and the old file without a false transition."""
    s = r.supervisor_state
    same_pid = r.pid is not None and r.pid == r.prior_pid
    m = replace(m, supervisor_state=s, pid=r.pid)
    if s in LIVE_STATES:
        # supervisord may still say STARTING (startsecs) of a sidecar already healthy:
        # the same pid in the same live state is kept as it was, ``since`` included.
        if same_pid and r.prior_state in (State.RUNNING, State.STARTING) and r.prior_since is not None:
            m = replace(m, state=r.prior_state, since=r.prior_since,
                        starting_since=r.prior_since if r.prior_state is State.STARTING else None)
        else:
            m = _enter(m, State.STARTING, now, starting_since=now)
        # Reap: a tree the previous listener recorded under another pid (supervisord
        # itself was restarted) is orphaned and may hold the port; the live one is spared.
        return m, ([Watch(r.pid)] if r.pid is not None else []) + [Write(), Reap()]
    if s in ("STOPPING", "STOPPED", None) or s == "EXITED" and r.prior_state is State.STOPPED:
        keep = r.prior_state is State.STOPPED and r.prior_since is not None
        m = replace(m, state=State.STOPPED, since=r.prior_since if keep else now, stopping=s is not None)
        return m, [Reap()]
    # EXITED, BACKOFF, FATAL, UNKNOWN: it is down and not on purpose.
    if r.prior_state is State.CRASHED and r.prior_since is not None:
        m = replace(m, state=State.CRASHED, since=r.prior_since, error=r.prior_error, log_tail=r.prior_log_tail)
        return m, [Reap()]
    m = _crash(m, now, f"found {s} when the listener started")
    return m, [CaptureLogTail(), Reap()]


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

