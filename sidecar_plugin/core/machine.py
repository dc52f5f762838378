"""The listener's decisions, as a pure state machine.

``step(model, input, now, config) -> (model, actions)``: inputs are supervisord
events, probe results, the death of the watched pid, what supervisord says on
each TICK, reap results and timer ticks; actions are what the shell
(``shell.listener``) must carry out. Every decision lives here: which state,
what to count, which config version the sidecar runs, when a lost event is
replayed, what a reap must spare, when to ask supervisord. No process, no
clock, no I/O, so every transition is unit-tested as data.
"""

from __future__ import annotations

from dataclasses import replace
from typing import List, Optional

from sidecar_plugin.core import identity, retry
from sidecar_plugin.core.counters import Counters, crash_cause
from sidecar_plugin.core.inputs import (
    Action, Ask, CaptureLogTail, Config, ConfigLoaded, ConfigSeen, Died, Identify, Input, KillHung, LogTail, Model,
    Observed, OperatorStop, Probe, ProcEvent, Query, Reap, Reaped, Recover, Result, StartProgram, StopProgram,
    SupervisorTick, Tick, TreeSigns, Watch, Workers, Write,
)
from sidecar_plugin.names import LIVE_STATES, STOPPING_STATES, State

__all__ = [
    "step", "reconcile", "Model", "Config", "ProcEvent", "Probe", "Died", "Reaped", "Tick", "Recover",
    "SupervisorTick", "Observed", "ConfigLoaded", "LogTail", "Write", "CaptureLogTail", "Watch", "Reap",
    "StopProgram", "KillHung", "StartProgram", "Ask", "Query", "OperatorStop", "Identify", "TreeSigns", "ConfigSeen",
    "Workers",
]


def step(m: Model, inp: Input, now: float, cfg: Config = Config()) -> Result:
    """Return the next model and the actions the shell must carry out, in order.

    A change of state is counted here, whatever input caused it.
    """
    after, actions = _transition(m, inp, now, cfg)
    after, actions = _settled(m, after, actions, inp, now, cfg)
    if after.state is not m.state and not isinstance(inp, Recover):
        cause = crash_cause(after.halted, after.supervisor_state)
        after = replace(after, counters=after.counters.after(m.state.value, after.state.value, cause))
    return after, actions


def _settled(before: Model, after: Model, actions: List[Action], inp: Input, now: float, cfg: Config) -> Result:
    """Rules that hold after every transition: the retry schedule, and who holds the port."""
    settled = retry.settle(before, after, now, cfg.backoff)
    if isinstance(inp, Reaped):
        holder = ", ".join(inp.foreign_holders) or (None if inp.port_free else settled.port_holder)
        settled = replace(settled, port_holder=holder)
    if settled.state is State.CRASHED and settled.port_holder:
        settled = replace(settled, error=identity.holder_note(settled.error, settled.port_holder))
    if settled != after and not any(isinstance(a, Write) for a in actions):
        actions = actions + [Write()]
    return settled, actions


def _transition(m: Model, inp: Input, now: float, cfg: Config) -> Result:
    if isinstance(inp, Probe) and inp.ok and m.probing and inp.started_at >= m.since:
        # A healthy answer counts only when the sidecar's own tree gave it (core.identity).
        if inp.own is None and identity.must_identify(m, now, cfg.identify_every):
            return m, [Identify(inp)]
        if inp.own is not None:
            m, inp = identity.judged(m, inp, now)
    if isinstance(inp, OperatorStop):
        return _on_operator_stop(m, now)
    if isinstance(inp, Tick):
        after, actions = _on_tick(m, now, cfg)
        return (after, actions) if actions else _on_retry_tick(after, now, cfg)
    if isinstance(inp, Recover):
        found = _on_recover_retrying(m, inp, now)
        if found is not None:
            return found
        after, actions = _on_recover(m, inp, now)
        attempt = retry.prior_attempt(inp.prior_retry)[0]
        if after.state is not State.STOPPED and attempt:  # a try was under way: keep counting
            after = replace(after, retry_attempt=attempt)
        return after, actions
    if isinstance(inp, ProcEvent):
        if inp.state == "STARTING" and inp.pid is None and not inp.asked:
            return m, [Ask(inp)]  # STARTING carries no pid: ask, so it is watched from its first second
        return _on_event(m, inp, now)
    if isinstance(inp, Probe):
        return _on_probe(m, inp, now, cfg)
    if isinstance(inp, Died):
        if inp.pid == m.pid and not inp.asked:
            return m, [Ask(inp)]  # is supervisord stopping it on purpose?
        return _on_died(m, inp, now)
    if isinstance(inp, Reaped):
        return _on_reaped(m, inp)
    if isinstance(inp, SupervisorTick):
        return m, [Query()]
    if isinstance(inp, Observed):
        return _on_observed(m, inp, now, cfg)
    if isinstance(inp, ConfigLoaded):
        if inp.pid != m.version_pid:  # a new process reads its config now; the same one keeps what it read
            return replace(m, config_version=inp.version, version_pid=inp.pid), []
        return m, []
    if isinstance(inp, ConfigSeen):
        return _follow_reload(replace(m, config_seen=(inp.version, inp.mtime)))
    if isinstance(inp, Workers):
        return _follow_reload(replace(m, workers=tuple(inp.born)))
    if isinstance(inp, TreeSigns):
        return _on_signs(m, inp, now, cfg)
    if isinstance(inp, LogTail):
        return replace(m, log_tail=inp.lines), [Write()]
    return m, []


def _reap(m: Model, at: Optional[float], now: float) -> Reap:
    """Reap what was born before the exit; spare the process supervisord runs now, if the model knows it."""
    return Reap(before=at if at is not None else now,
                spare=m.pid if m.supervisor_state in LIVE_STATES else None)


def _on_observed(m: Model, o: Observed, now: float, cfg: Config) -> Result:
    """Replay the events supervisord's answer says were lost, once two TICKs agree on it."""
    missed = reconcile(m, o.statename, o.pid)
    seen = (o.statename, o.pid)
    if missed and m.mismatch != seen:
        # The events may still be on their way (supervisord sent the TICK before them):
        # replay only when the next tick finds the same difference. A lost event costs two ticks.
        return replace(m, mismatch=seen), []
    m = replace(m, mismatch=None)
    actions: List[Action] = []
    for ev in missed:
        m, more = step(m, ev, now, cfg)
        actions += more
    return m, actions


def _enter(m: Model, state: State, now: float, **changes: object) -> Model:
    """Move to ``state``; ``since`` changes only when the state does."""
    since = m.since if m.state is state else now
    return replace(m, state=state, since=since, **changes)


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
                   failures=0, health_ok=None, error=None, log_tail=(), stopping=False, halted=None,
                   port_free=None, answered_at=None, stopped_at=None, cpu=None, cpu_base=None, workers=(),
                   accepted_at=None)
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
        return m, [_reap(m, ev.at, now)]
    if s in ("EXITED", "BACKOFF", "FATAL"):
        return _on_exit_event(m, ev, now)
    return replace(m, supervisor_state=s or m.supervisor_state), [Write()]


def _on_exit_event(m: Model, ev: ProcEvent, now: float) -> Result:
    s = ev.state
    m = replace(m, supervisor_state=s, pid=None)
    if m.stopping and s == "EXITED":
        m = _enter(m, State.STOPPED, now) if m.halted is None else m
        return m, [_reap(m, ev.at, now)]
    actions: List[Action] = [CaptureLogTail(), Write(), _reap(m, ev.at, now)]
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
        m = replace(m, stopping=True)
        return m, [_reap(replace(m, pid=None), d.at, now)]
    if m.state is State.CRASHED:
        m = replace(m, pid=None)
        return m, [_reap(m, d.at, now)]
    m = _crash(m, now, f"exited unexpectedly (pid {d.pid})", pid=None, health_ok=None)
    return m, [CaptureLogTail(), Write(), _reap(m, d.at, now)]


def _on_reaped(m: Model, r: Reaped) -> Result:
    m = replace(m, port_free=r.port_free)
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
        m = replace(m, health_ok=True, checked_at=now, latency_ms=p.latency_ms, failures=0, answered_at=now,
                    cpu_base=(m.cpu, now) if m.cpu is not None else None)
        if m.state is State.STARTING:
            return _enter(m, State.RUNNING, now, starting_since=None), [Write()]
        return m, []
    m = replace(m, health_ok=False, checked_at=now, latency_ms=p.latency_ms, failures=m.failures + 1,
                probe_detail=p.detail)
    return _judge_hang(m, now, cfg)


def _on_signs(m: Model, s: TreeSigns, now: float, cfg: Config) -> Result:
    """Record the tree's signs: since when its main process is stopped, and its CPU progress."""
    stopped_at = (m.stopped_at if m.stopped_at is not None else now) if s.stopped else None
    cpu_base = m.cpu_base if m.cpu_base is not None or s.cpu is None else (s.cpu, now)
    accepted_at = now if s.accepted else m.accepted_at
    return _judge_hang(replace(m, stopped_at=stopped_at, cpu=s.cpu, cpu_base=cpu_base, accepted_at=accepted_at),
                       now, cfg)


def _judge_hang(m: Model, now: float, cfg: Config) -> Result:
    """Call a running sidecar hung only on absence of progress, never on slowness.

    Probes do not wait on each other and each has an overall deadline, so a
    busy sidecar's slow answers keep arriving and keep it alive; a tree that
    accepts new connections is serving, even when its health answers are
    later than the window. Hung is: no answer and no accepted connection for
    ``hang_window``; or, sooner where it is certain, a main
    process stopped (SIGSTOP, a debugger) with no answer since, or no answer
    for ``quiet_window`` while the whole tree used no CPU.
    """
    if m.state is not State.RUNNING or not m.probing:
        return m, []
    answered = m.answered_at if m.answered_at is not None else m.since
    # Serving other requests is progress too: under overload the health answer queues behind them.
    last = max(answered, m.accepted_at or 0.0)
    silent = now - last
    why = None
    if m.stopped_at is not None and now - m.stopped_at >= cfg.stopped_grace and answered <= m.stopped_at:
        why = (f"stopped answering health checks: its main process is stopped (SIGSTOP or a debugger), "
               f"no answer for {silent:.0f} s")
    elif silent >= cfg.hang_window and m.failures >= cfg.failure_threshold:
        why = (f"stopped answering health checks (no answer for {silent:.0f} s, "
               f"{m.failures} failures in a row: {m.probe_detail})")
    elif (silent >= cfg.quiet_window and m.failures >= 1 and m.cpu is not None and m.cpu_base is not None
          and now - m.cpu_base[1] >= cfg.quiet_window and m.cpu - m.cpu_base[0] < 0.005):
        why = (f"stopped answering health checks (no answer and no CPU used for {silent:.0f} s: "
               f"{m.probe_detail})")
    if why is None:
        return m, []
    return _crash(m, now, why + "; restarting it", halted="hung"), [CaptureLogTail(), Write(), KillHung()]


def _follow_reload(m: Model) -> Result:
    """Follow a rolling worker replacement (SIGHUP): the main pid stays, its workers are new.

    When every worker was born after litellm.yaml last changed, every one of
    them read that version: it is the version the sidecar serves.
    """
    seen = m.config_seen
    if (seen is None or not m.workers or m.pid is None or min(m.workers) < seen[1]
            or seen[0] == m.config_version):
        return m, []
    return replace(m, config_version=seen[0]), [Write()]


def _on_tick(m: Model, now: float, cfg: Config) -> Result:
    if (m.state is State.STARTING and m.halted is None and not m.stopping
            and m.starting_since is not None and now - m.starting_since >= cfg.health_timeout):
        why = f"did not become healthy within {cfg.health_timeout:g} s"
        return _crash(m, now, why, halted="timeout"), [CaptureLogTail(), Write(), StopProgram()]
    return _judge_hang(m, now, cfg)


def _on_retry_tick(m: Model, now: float, cfg: Config) -> Result:
    m, todo = retry.on_tick(m, now, cfg.backoff)
    return m, ([StartProgram()] if "start" in todo else []) + ([Write()] if "write" in todo else [])


def _on_operator_stop(m: Model, now: float) -> Result:
    """An operator's stop: ``stopped`` at once, no retry; stop it here too if it runs (a retry just started it)."""
    # Live, or about to be: a retry the listener asked for may have been spawned already.
    live = m.supervisor_state in LIVE_STATES + ("BACKOFF",) or m.retry_asked_at is not None
    if m.state is State.STOPPED and not live:
        return m, []
    m = _enter(m, State.STOPPED, now, error=None, log_tail=(), halted=None, stopping=m.stopping or live)
    return m, ([StopProgram()] if live else []) + [Write()]


def _on_recover_retrying(m: Model, r: Recover, now: float) -> Optional[Result]:
    """A listener restarted while the previous one was retrying: keep the count and the time of the next try.

    supervisord says STOPPED (the previous listener stopped it after a health
    timeout) or FATAL; without the previous file's ``retry`` a STOPPED
    sidecar would read as an operator's stop and never come back.
    """
    attempt, next_at, delay = retry.prior_attempt(r.prior_retry)
    if not (attempt and r.prior_state is State.CRASHED and r.supervisor_state in ("STOPPED", "FATAL")):
        return None
    m = replace(m, state=State.CRASHED, since=r.prior_since if r.prior_since is not None else now,
                supervisor_state=r.supervisor_state, pid=None, counters=_adopted(r), error=r.prior_error,
                log_tail=r.prior_log_tail, config_version=r.prior_config_version, version_pid=r.prior_pid,
                halted="timeout" if r.supervisor_state == "STOPPED" else None, stopping=False,
                retry_attempt=attempt, retry_at=next_at if next_at is not None else now,
                retry_delay=delay)
    return m, [Write(), _reap(m, None, now)]


def _on_recover(m: Model, r: Recover, now: float) -> Result:
    """Rebuild from supervisord and the old file without a false transition."""
    s = r.supervisor_state
    same_pid = r.pid is not None and r.pid == r.prior_pid
    m = replace(m, supervisor_state=s, pid=r.pid, counters=_adopted(r),
                config_version=r.prior_config_version, version_pid=r.prior_pid,
                answered_at=now)  # hang windows count from now: the old listener's silence is not the sidecar's
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
        return _counted(m, r), ([Watch(r.pid)] if r.pid is not None else []) + [Write(), _reap(m, None, now)]
    if s in ("STOPPING", "STOPPED", None) or s == "EXITED" and r.prior_state is State.STOPPED:
        keep = r.prior_state is State.STOPPED and r.prior_since is not None
        m = replace(m, state=State.STOPPED, since=r.prior_since if keep else now, stopping=s is not None)
        return _counted(m, r), [_reap(m, None, now)]
    # EXITED, BACKOFF, FATAL, UNKNOWN: it is down and not on purpose.
    if r.prior_state is State.CRASHED and r.prior_since is not None:
        m = replace(m, state=State.CRASHED, since=r.prior_since, error=r.prior_error, log_tail=r.prior_log_tail)
        return m, [_reap(m, None, now)]
    m = _crash(m, now, f"found {s} when the listener started")
    return _counted(m, r), [CaptureLogTail(), _reap(m, None, now)]


def _adopted(r: Recover) -> "Counters":
    """The counters the previous listener wrote: a listener restart does not reset them."""
    return Counters.from_dict(r.prior_counters)


def _counted(m: Model, r: Recover) -> Model:
    """Count a recovery only as a change from what the old file said (none: stopped)."""
    before = r.prior_state or State.STOPPED
    if before is m.state:
        return m
    cause = crash_cause(m.halted, m.supervisor_state, recovering=True)
    return replace(m, counters=m.counters.after(before.value, m.state.value, cause))


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

