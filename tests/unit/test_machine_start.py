"""Slow is not failed: a start is judged by its progress, not by the clock (the machine's rules as data).

Each row is a start seen by the listener: what the tree showed (CPU seconds
used so far, the log's size, workers born, who else holds the port, a stopped
main process) and the probes that failed, then the verdict at a given second.
The defaults are the shipped ones: a health timeout of 300 s as the outer
bound, 20 s without progress (the hang window) as the fast failure.
"""

import pytest

from sidecar_plugin.core.listener import machine as m
from sidecar_plugin.names import DEFAULT_HEALTH_TIMEOUT, State

CFG = m.Config()  # the defaults a render ships
T0 = 100.0  # supervisord says STARTING


def started():
    model, _ = m.step(m.Model(), m.ProcEvent("STARTING", pid=10, asked=True), T0, CFG)
    model, _ = m.step(model, m.ProcEvent("RUNNING", pid=10), T0 + 1, CFG)  # startsecs passed; not healthy yet
    return model


def run(until, cpu=None, log=None, workers=None, foreign=None, stopped=None, elsewhere=None):
    """Feed one second at a time until ``until``: signs, a refused probe, a tick; stop at a crash.

    Each of ``cpu``, ``log``, ``foreign``, ``stopped`` maps a second to the sign of that second
    (``None``: not looked); ``workers`` maps a second to the workers' birth times then.
    """
    model, actions = started(), []
    t = T0 + 1
    while t <= until and model.state is State.STARTING:
        sign = m.TreeSigns(stopped=bool(stopped and stopped(t)), cpu=cpu(t) if cpu else None,
                           log_size=log(t) if log else None, foreign=foreign(t) if foreign else None,
                           elsewhere=elsewhere(t) if elsewhere else None)
        inputs = [sign, m.Probe(ok=False, started_at=t - 0.05, detail="connection refused"), m.Tick()]
        if workers:
            inputs.insert(0, m.Workers(workers(t)))
        for inp in inputs:
            model, acts = m.step(model, inp, t, CFG)
            actions += acts
        t += 1.0
    return model, actions, t - 1.0


def busy(t):
    return 0.05 * (t - T0)  # a CPU-starved import: 50 ms of CPU each second


def idle_after(start):
    return lambda t: min(busy(t), busy(start))


ROWS = [
    # name, signs, when to look, the state then, what the error says
    ("a busy host: CPU used slowly for four minutes", dict(cpu=busy), T0 + 240, State.STARTING, None),
    ("no CPU for the hang window after working", dict(cpu=idle_after(T0 + 30)), T0 + 60, State.CRASHED,
     "made no progress while starting for 20 s"),
    ("no CPU, but its log grows", dict(cpu=idle_after(T0 + 5), log=lambda t: int(t) * 10), T0 + 120,
     State.STARTING, None),
    ("no CPU, but a worker is born every 10 s", dict(cpu=idle_after(T0 + 5),
                                                    workers=lambda t: tuple(range(int((t - T0) // 10)))),
     T0 + 100, State.STARTING, None),
    ("stuck once its workers are forked: an idle uvicorn parent pinging them (6.5 ms of CPU a second)",
     dict(cpu=lambda t: busy(min(t, T0 + 10)) + 0.0065 * max(0.0, t - T0 - 10)), T0 + 60, State.CRASHED,
     "made no progress while starting"),
    ("the same two workers, their birth times re-read a few ms apart each second",
     dict(cpu=idle_after(T0 + 5), workers=lambda t: (1000.0 + (t % 3) * 0.004, 1001.0 - (t % 2) * 0.003)),
     T0 + 60, State.CRASHED, "made no progress while starting"),
    ("no CPU sample at all: only the outer bound judges", dict(), T0 + 299, State.STARTING, None),
    ("no CPU sample at all, at the health timeout", dict(), T0 + 301, State.CRASHED,
     f"did not become healthy within {DEFAULT_HEALTH_TIMEOUT:g} s"),
    ("working forever but never healthy: the outer bound", dict(cpu=busy), T0 + 301, State.CRASHED,
     f"did not become healthy within {DEFAULT_HEALTH_TIMEOUT:g} s"),
    ("its main process stopped (SIGSTOP)", dict(cpu=idle_after(T0 + 10), stopped=lambda t: t >= T0 + 10),
     T0 + 13, State.CRASHED, "stopped (SIGSTOP or a debugger) while starting"),
    ("another process holds the port", dict(cpu=busy, foreign=lambda t: ("pid 77 nc",)), T0 + 6,
     State.CRASHED, "its port is held by pid 77 nc"),
    ("another process on the port for a moment (an orphan reaped)",
     dict(cpu=busy, foreign=lambda t: ("pid 77 python",) if t < T0 + 3 else ()), T0 + 60, State.STARTING, None),
]


@pytest.mark.parametrize("name, signs, until, state, error", ROWS, ids=[r[0] for r in ROWS])
def test_a_start_is_judged_by_progress(name, signs, until, state, error):
    model, actions, _ = run(until, **signs)
    assert model.state is state, (name, model.error)
    if state is State.CRASHED:
        assert error in model.error
        assert model.halted == "timeout"
        assert any(isinstance(a, m.StopProgram) for a in actions)
        assert model.retry_at is not None  # the listener starts it again later
    else:
        assert not any(isinstance(a, m.StopProgram) for a in actions)


def test_a_stalled_start_fails_within_the_hang_window_not_the_health_timeout():
    model, _, at = run(T0 + 200, cpu=idle_after(T0 + 30))
    assert model.state is State.CRASHED
    assert at - (T0 + 30) <= CFG.hang_window + 1


def test_a_slow_start_that_answers_at_last_is_running_however_long_it_took():
    model, actions, _ = run(T0 + 200, cpu=busy)
    model, _ = m.step(model, m.Probe(ok=True, started_at=T0 + 200, latency_ms=3.0, own=True), T0 + 200.1, CFG)
    assert model.state is State.RUNNING
    assert model.since == T0 + 200.1
    assert not any(isinstance(a, m.StopProgram) for a in actions)


def test_the_port_holder_is_named_in_the_state_and_forgotten_with_the_next_start():
    model, _, _ = run(T0 + 10, cpu=busy, foreign=lambda t: ("pid 77 nc",))
    assert model.port_holder == "pid 77 nc"
    model, _ = m.step(model, m.ProcEvent("STOPPED"), T0 + 11, CFG)
    model, _ = m.step(model, m.ProcEvent("STARTING", pid=11, asked=True), T0 + 30, CFG)
    assert model.state is State.STARTING
    assert model.foreign_at is None
    assert model.port_holder is None


def test_a_tree_that_binds_its_own_port_instead_of_supervisords_fails_within_seconds():
    """LiteLLM's CLI behind a wrapper, handed supervisord's socket: it binds a port of its own and would stay
    starting (busy, never healthy) until the outer bound; its listening elsewhere fails it in seconds."""
    model, actions, at = run(T0 + 200, cpu=busy, elsewhere=lambda t: (43117,) if t >= T0 + 12 else ())
    assert model.state is State.CRASHED
    assert at - (T0 + 12) <= 4
    assert "listens on port 43117 instead of the socket supervisord hands it" in model.error
    assert any(isinstance(a, m.StopProgram) for a in actions)


def test_listening_elsewhere_only_for_a_moment_fails_nothing():
    model, _, _ = run(T0 + 40, cpu=busy, elsewhere=lambda t: (43117,) if t == T0 + 12 else ())
    assert model.state is State.STARTING
    assert model.elsewhere_at is None
