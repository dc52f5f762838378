"""The listener's decisions, as a pure state machine.

``step(model, input, now, config) -> (model, actions)``: inputs are supervisord
events, probe results, the death of the watched pid, what supervisord says on
each TICK, reap results and timer ticks; actions are what the shell
(``shell.listener.engine``) must carry out. Every decision lives in the core: which
state, what to count, which config version the sidecar runs, when a lost event
is replayed, what a reap must spare, when to ask supervisord. No process, no
clock, no I/O, so every transition is unit-tested as data.

This module dispatches and applies the rules that hold after every step; the
rules themselves live by subject: ``lifecycle`` (supervisord's events, exits,
stops, reloads), ``health`` (running, hung, the start timeout), ``recovery``
(a listener's restart), ``retry`` (the listener's own restarts), ``identity``
(whose answer a probe got).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Dict, List, Optional, Tuple

from sidecar_plugin.core.listener import health, identity, lifecycle, recovery, retry
from sidecar_plugin.core.listener.actions import (
    Action, Ask, CaptureLogTail, Identify, KillHung, Query, Reap, Result, StartProgram, StopProgram, Watch, Write, only,
)
from sidecar_plugin.core.listener.counters import crash_cause
from sidecar_plugin.core.listener.inputs import (
    ConfigLoaded, ConfigSeen, Died, Input, LogTail, Observed, OperatorStop, Probe, ProcEvent, Reaped, Recover,
    SupervisorTick, Tick, TreeSigns, Workers,
)
from sidecar_plugin.core.listener.lifecycle import reconcile
from sidecar_plugin.core.listener.model import Config, Model
from sidecar_plugin.names import State

__all__ = [
    "step", "reconcile", "Model", "Config", "ProcEvent", "Probe", "Died", "Reaped", "Tick", "Recover",
    "SupervisorTick", "Observed", "ConfigLoaded", "LogTail", "Write", "CaptureLogTail", "Watch", "Reap",
    "StopProgram", "KillHung", "StartProgram", "Ask", "Query", "OperatorStop", "Identify", "TreeSigns", "ConfigSeen",
    "Workers",
]


def step(model: Model, inp: Input, now: float, cfg: Config = Config()) -> Result:
    """Return the next model and the actions the shell must carry out, in order.

    A change of state is counted here, whatever input caused it.
    """
    after, actions = _transition(model, inp, now, cfg)
    after, actions = _settled(model, after, actions, inp, now, cfg)
    if after.state is not model.state and not isinstance(inp, (Recover, Observed)):  # a replay counted its own
        cause = crash_cause(after.halted, after.supervisor_state)
        after = replace(after, counters=after.counters.after(model.state.value, after.state.value, cause))
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


def _transition(model: Model, inp: Input, now: float, cfg: Config) -> Result:
    """Ask first what the decision needs (whose answer, which pid, on purpose?), then decide."""
    asked = _needs_asking(model, inp, now, cfg)
    if asked is not None:
        return model, [asked]
    if isinstance(inp, Probe) and inp.own is not None and inp.ok and model.probing and inp.started_at >= model.since:
        # a healthy answer counts only when the sidecar's own tree gave it
        model, inp = identity.judged(model, inp, now)
    rule = _RULES.get(type(inp))
    return rule(model, inp, now, cfg) if rule is not None else (model, [])


def _needs_asking(model: Model, inp: Input, now: float, cfg: Config) -> Optional[Action]:
    """Return the question to put to the world before ``inp`` can be judged, if any."""
    if (isinstance(inp, Probe) and inp.ok and model.probing and inp.started_at >= model.since and inp.own is None
            and identity.must_identify(model, now, cfg.identify_every)):
        return Identify(inp)  # who holds the port
    if isinstance(inp, ProcEvent) and inp.state == "STARTING" and inp.pid is None and not inp.asked:
        return Ask(inp)  # STARTING carries no pid: ask, so it is watched from its first second
    if isinstance(inp, Died) and inp.pid == model.pid and not inp.asked:
        return Ask(inp)  # is supervisord stopping it on purpose?
    return None


def _on_tick(model: Model, inp: Tick, now: float, cfg: Config) -> Result:
    after, actions = health.on_timer(model, now, cfg)
    if actions:
        return after, actions
    after, todo = retry.on_tick(after, now, cfg.backoff)
    return after, only("start" in todo, StartProgram()) + only("write" in todo, Write())


def _on_observed(model: Model, o: Observed, now: float, cfg: Config) -> Result:
    """Replay the events supervisord's answer says were lost, once two TICKs agree on it."""
    missed = reconcile(model, o.statename, o.pid)
    seen = (o.statename, o.pid)
    if missed and model.mismatch != seen:
        # The events may still be on their way (supervisord sent the TICK before them):
        # replay only when the next tick finds the same difference. A lost event costs two ticks.
        return replace(model, mismatch=seen), []
    model = replace(model, mismatch=None)
    actions: List[Action] = []
    for ev in missed:
        model, more = step(model, ev, now, cfg)
        actions += more
    return model, actions


def _on_config_loaded(model: Model, inp: ConfigLoaded, now: float, cfg: Config) -> Result:
    if inp.pid != model.version_pid:  # a new process reads its config now; the same one keeps what it read
        return replace(model, config_version=inp.version, version_pid=inp.pid), []
    return model, []


Rule = Callable[[Model, Any, float, Config], Tuple[Model, List[Action]]]
_RULES: Dict[type, Rule] = {
    OperatorStop: lambda model, inp, now, cfg: lifecycle.on_operator_stop(model, now),
    Tick: _on_tick,
    Recover: lambda model, inp, now, cfg: recovery.on_recover(model, inp, now),
    ProcEvent: lambda model, inp, now, cfg: lifecycle.on_event(model, inp, now),
    Probe: health.on_probe,
    Died: lambda model, inp, now, cfg: lifecycle.on_died(model, inp, now),
    Reaped: lambda model, inp, now, cfg: lifecycle.on_reaped(model, inp),
    SupervisorTick: lambda model, inp, now, cfg: (model, [Query()]),
    Observed: _on_observed,
    ConfigLoaded: _on_config_loaded,
    ConfigSeen: lambda model, inp, now, cfg: lifecycle.follow_reload(
        replace(model, config_seen=(inp.version, inp.mtime))),
    Workers: lambda model, inp, now, cfg: lifecycle.follow_reload(replace(health.on_workers(model, inp, now),
                                                                      workers=tuple(inp.born))),
    TreeSigns: health.on_signs,
    LogTail: lambda model, inp, now, cfg: (replace(model, log_tail=inp.lines), [Write()]),
}
