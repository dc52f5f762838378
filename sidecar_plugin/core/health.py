"""Health: when a starting sidecar becomes ``running``, and when a running one is hung.

Hung means no progress, never slowness: under overload a sidecar's health
answers queue behind real requests and arrive late, and killing it then would
cut every request in flight. So a slow answer still counts, a tree that
accepts connections is serving, and only silence (or a main process that is
stopped, or a tree that uses no CPU) ends a run. A start that never becomes
healthy is the other failure, judged on the timer.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

from sidecar_plugin.core.actions import CaptureLogTail, KillHung, Result, StopProgram, Write
from sidecar_plugin.core.inputs import Probe, TreeSigns
from sidecar_plugin.core.model import Config, Model
from sidecar_plugin.core.moves import crash, enter
from sidecar_plugin.names import State


def on_probe(m: Model, p: Probe, now: float, cfg: Config) -> Result:
    """Count a probe of the current run: a healthy one makes a start ``running``; failures feed the hang rule."""
    if p.started_at < m.since or not m.probing:
        return m, []
    if p.ok:
        m = replace(m, health_ok=True, checked_at=now, latency_ms=p.latency_ms, failures=0, answered_at=now,
                    cpu_base=(m.cpu, now) if m.cpu is not None else None)
        if m.state is State.STARTING:
            return enter(m, State.RUNNING, now, starting_since=None), [Write()]
        return m, []
    m = replace(m, health_ok=False, checked_at=now, latency_ms=p.latency_ms, failures=m.failures + 1,
                probe_detail=p.detail)
    return judge_hang(m, now, cfg)


def on_signs(m: Model, s: TreeSigns, now: float, cfg: Config) -> Result:
    """Record the tree's signs: since when its main process is stopped, and its CPU progress."""
    stopped_at = (m.stopped_at if m.stopped_at is not None else now) if s.stopped else None
    cpu_base = m.cpu_base if m.cpu_base is not None or s.cpu is None else (s.cpu, now)
    accepted_at = now if s.accepted else m.accepted_at
    return judge_hang(replace(m, stopped_at=stopped_at, cpu=s.cpu, cpu_base=cpu_base, accepted_at=accepted_at),
                      now, cfg)


def on_timer(m: Model, now: float, cfg: Config) -> Result:
    """A start that is not healthy within the health timeout is stopped (the retry rule brings it back)."""
    if (m.state is State.STARTING and m.halted is None and not m.stopping
            and m.starting_since is not None and now - m.starting_since >= cfg.health_timeout):
        why = f"did not become healthy within {cfg.health_timeout:g} s"
        return crash(m, now, why, halted="timeout"), [CaptureLogTail(), Write(), StopProgram()]
    return judge_hang(m, now, cfg)


def judge_hang(m: Model, now: float, cfg: Config) -> Result:
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
    why = _hang_reason(m, now, cfg)
    if why is None:
        return m, []
    return crash(m, now, why + "; restarting it", halted="hung"), [CaptureLogTail(), Write(), KillHung()]


def _hang_reason(m: Model, now: float, cfg: Config) -> Optional[str]:
    """Why a running sidecar is hung, or None while it shows progress (see ``judge_hang``)."""
    answered = m.answered_at if m.answered_at is not None else m.since
    # Serving other requests is progress too: under overload the health answer queues behind them.
    silent = now - max(answered, m.accepted_at or 0.0)
    if m.stopped_at is not None and now - m.stopped_at >= cfg.stopped_grace and answered <= m.stopped_at:
        return (f"stopped answering health checks: its main process is stopped (SIGSTOP or a debugger), "
                f"no answer for {silent:.0f} s")
    if silent >= cfg.hang_window and m.failures >= cfg.failure_threshold:
        return (f"stopped answering health checks (no answer for {silent:.0f} s, "
                f"{m.failures} failures in a row: {m.probe_detail})")
    if (silent >= cfg.quiet_window and m.failures >= 1 and m.cpu is not None and m.cpu_base is not None
            and now - m.cpu_base[1] >= cfg.quiet_window and m.cpu - m.cpu_base[0] < 0.005):
        return f"stopped answering health checks (no answer and no CPU used for {silent:.0f} s: {m.probe_detail})"
    return None
