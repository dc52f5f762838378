"""Health: when a starting sidecar becomes ``running``, and when a running one is hung.

Hung means no progress, never slowness: under overload a sidecar's health
answers queue behind real requests and arrive late, and killing it then would
cut every request in flight. So a slow answer still counts, a tree that
accepts connections is serving, and only silence (or a main process that is
stopped, or a tree that uses no CPU) ends a run.

A start is judged the same way, by progress and not by the clock: on a busy
host LiteLLM needs a minute or more to import and bind, and stopping it at a
fixed 20 s stopped every start. A starting tree that uses CPU, writes its log
or brings up a worker is working, however long it takes; a start fails fast
only when it shows none (``start_failure``), and the health timeout stays as
an outer bound far above any start.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Dict, Optional

from sidecar_plugin.core.listener.actions import CaptureLogTail, KillHung, Result, StopProgram, Write
from sidecar_plugin.core.listener.inputs import Probe, TreeSigns, Workers
from sidecar_plugin.core.listener.model import Config, Model
from sidecar_plugin.core.listener.transitions import crash, enter
from sidecar_plugin.names import State

# CPU seconds a tree must use over a window to count as working (an idle or blocked one uses none).
IDLE_CPU = 0.005
# A starting tree works when it uses at least this share of one core over the hang window (20 s:
# 0.5 CPU-seconds). An import starved by CPU hogs still gets far more; an idle uvicorn parent that
# only pings its workers twice a second uses about 0.0065 (measured: 130 ms in 20 s), so a start
# stuck once its workers are forked is a stall, not progress.
START_CPU_SHARE = 0.025
# Two birth times closer than this are one worker (they are re-read each sample and drift by ms).
SAME_BIRTH = 1.0
# How long another process must hold the port while the sidecar starts before the start fails
# (an orphan of the previous tree is reaped within this).
FOREIGN_GRACE = 3.0


def on_probe(model: Model, p: Probe, now: float, cfg: Config) -> Result:
    """Count a probe of the current run: a healthy one makes a start ``running``; failures feed the hang rule."""
    if p.started_at < model.since or not model.probing:
        return model, []
    if p.ok:
        model = replace(model, health_ok=True, checked_at=now, latency_ms=p.latency_ms, failures=0, answered_at=now,
                    cpu_base=(model.cpu, now) if model.cpu is not None else None)
        if model.state is State.STARTING:
            return enter(model, State.RUNNING, now, starting_since=None), [Write()]
        return model, []
    model = replace(model, health_ok=False, checked_at=now, latency_ms=p.latency_ms, failures=model.failures + 1,
                probe_detail=p.detail)
    return judge_hang(model, now, cfg)


def on_signs(model: Model, s: TreeSigns, now: float, cfg: Config) -> Result:
    """Record the tree's signs: since when its main process is stopped, its CPU and (starting) its progress."""
    stopped_at = (model.stopped_at if model.stopped_at is not None else now) if s.stopped else None
    cpu_base = model.cpu_base if model.cpu_base is not None or s.cpu is None else (s.cpu, now)
    accepted_at = now if s.accepted else model.accepted_at
    model = replace(model, stopped_at=stopped_at, cpu=s.cpu, cpu_base=cpu_base, accepted_at=accepted_at)
    if model.state is State.STARTING:
        return _start_progress(model, s, now, START_CPU_SHARE * cfg.hang_window), []
    return judge_hang(model, now, cfg)


def on_workers(model: Model, w: Workers, now: float) -> Model:
    """A worker born or retired while it starts is progress (uvicorn brings them up one by one)."""
    born = tuple(w.born)
    changed = len(born) != len(model.workers) or any(all(abs(b - o) >= SAME_BIRTH for o in model.workers) for b in born)
    if model.state is State.STARTING and model.progress_at is not None and changed:
        return replace(model, progress_at=now)
    return model


def _start_progress(model: Model, s: TreeSigns, now: float, working: float) -> Model:
    """Note whether a starting tree progressed: ``working`` CPU-seconds used, its log written, and who else
    holds its port."""
    changes: Dict[str, Any] = {}
    if s.cpu is not None and (model.progress_cpu is None or s.cpu - model.progress_cpu >= working):
        changes.update(progress_at=now, progress_cpu=s.cpu)
    if s.log_size is not None:
        if model.log_size is not None and s.log_size != model.log_size and model.progress_at is not None:
            changes["progress_at"] = now
        changes["log_size"] = s.log_size
    if s.foreign:
        changes.update(foreign_at=model.foreign_at if model.foreign_at is not None else now,
                       port_holder=", ".join(s.foreign))
    elif s.foreign is not None and model.foreign_at is not None:  # it went away
        changes.update(foreign_at=None, port_holder=None)
    if s.elsewhere:
        changes.update(elsewhere_at=model.elsewhere_at if model.elsewhere_at is not None else now,
                       elsewhere=s.elsewhere)
    elif s.elsewhere is not None and model.elsewhere_at is not None:
        changes.update(elsewhere_at=None, elsewhere=())
    return replace(model, **changes) if changes else model


def on_timer(model: Model, now: float, cfg: Config) -> Result:
    """A start that fails (``start_failure``) is stopped (the retry rule brings it back); a running one may be hung."""
    if (model.state is State.STARTING and model.halted is None and not model.stopping
            and model.starting_since is not None):
        why = start_failure(model, now, cfg)
        if why is None:
            return model, []
        return crash(model, now, why, halted="timeout"), [CaptureLogTail(), Write(), StopProgram()]
    return judge_hang(model, now, cfg)


def start_failure(model: Model, now: float, cfg: Config) -> Optional[str]:
    """Why a start has failed, or None while it may still succeed: progress, not the clock, decides.

    In this order: the health timeout, the outer bound (minutes by default);
    its main process stopped (SIGSTOP, a debugger) for ``stopped_grace``;
    another process holding its port for ``FOREIGN_GRACE`` (LiteLLM then
    binds elsewhere, or not at all); its tree listening on another port than
    supervisord's socket for as long (it binds its own and never serves that one);
    no CPU used, no log line written and no worker born for ``hang_window``. An exit is supervisord's event.
    """
    if model.starting_since is not None and now - model.starting_since >= cfg.health_timeout:
        return f"did not become healthy within {cfg.health_timeout:g} s"
    if model.stopped_at is not None and now - model.stopped_at >= cfg.stopped_grace:
        return f"its main process is stopped (SIGSTOP or a debugger) while starting, for {now - model.stopped_at:.0f} s"
    if model.foreign_at is not None and now - model.foreign_at >= FOREIGN_GRACE:
        return f"cannot start: its port is held by {model.port_holder or 'another process'}, not by the sidecar"
    if model.elsewhere_at is not None and now - model.elsewhere_at >= FOREIGN_GRACE:
        return (f"cannot serve: it listens on port {', '.join(map(str, model.elsewhere))} instead of the socket "
                "supervisord hands it on fd 0 (--binary binds its own port: render with LiteLLM's own entry "
                "point, or a --binary that takes the socket on fd 0)")
    if model.progress_at is not None and now - model.progress_at >= cfg.hang_window:
        return (f"made no progress while starting for {now - model.progress_at:.0f} s "
                "(no CPU used, no log line written, no worker born)")
    return None


def judge_hang(model: Model, now: float, cfg: Config) -> Result:
    """Call a running sidecar hung only on absence of progress, never on slowness.

    Probes do not wait on each other and each has an overall deadline, so a
    busy sidecar's slow answers keep arriving and keep it alive; a tree that
    accepts new connections is serving, even when its health answers are
    later than the window. Hung is: no answer and no accepted connection for
    ``hang_window``; or, sooner where it is certain, a main
    process stopped (SIGSTOP, a debugger) with no answer since, or no answer
    for ``quiet_window`` while the whole tree used no CPU.
    """
    if model.state is not State.RUNNING or not model.probing:
        return model, []
    why = _hang_reason(model, now, cfg)
    if why is None:
        return model, []
    return crash(model, now, why + "; restarting it", halted="hung"), [CaptureLogTail(), Write(), KillHung()]


def _hang_reason(model: Model, now: float, cfg: Config) -> Optional[str]:
    """Why a running sidecar is hung, or None while it shows progress (see ``judge_hang``)."""
    answered = model.answered_at if model.answered_at is not None else model.since
    # Serving other requests is progress too: under overload the health answer queues behind them.
    silent = now - max(answered, model.accepted_at or 0.0)
    if model.stopped_at is not None and now - model.stopped_at >= cfg.stopped_grace and answered <= model.stopped_at:
        return (f"stopped answering health checks: its main process is stopped (SIGSTOP or a debugger), "
                f"no answer for {silent:.0f} s")
    if silent >= cfg.hang_window and model.failures >= cfg.failure_threshold:
        return (f"stopped answering health checks (no answer for {silent:.0f} s, "
                f"{model.failures} failures in a row: {model.probe_detail})")
    if (silent >= cfg.quiet_window and model.failures >= 1 and model.cpu is not None and model.cpu_base is not None
            and now - model.cpu_base[1] >= cfg.quiet_window and model.cpu - model.cpu_base[0] < IDLE_CPU):
        return f"stopped answering health checks (no answer and no CPU used for {silent:.0f} s: {model.probe_detail})"
    return None
