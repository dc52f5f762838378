"""Health that proves identity: an answer counts only when the sidecar's own tree listens on the port."""

from dataclasses import replace

from sidecar_plugin.core.listener import machine as m
from sidecar_plugin.names import State

CFG = m.Config(health_timeout=20.0, failure_threshold=3)


def step(model, inp, now):
    return m.step(model, inp, now, CFG)


def kinds(actions):
    return [type(a).__name__ for a in actions]


def starting(since=0.0):
    return m.Model(state=State.STARTING, since=since, pid=10, supervisor_state="RUNNING", starting_since=since)


# ---- the machine --------------------------------------------------------------------------------

def test_a_healthy_answer_is_identified_before_it_counts():
    probe = m.Probe(ok=True, started_at=1.0, latency_ms=2.0)
    model, acts = step(starting(), probe, 1.1)
    assert model == starting()
    assert acts == [m.Identify(probe)]


def test_a_foreign_answer_is_never_running_and_names_the_holder():
    model = starting()
    for t in (1.0, 2.0, 3.0, 4.0):
        model, acts = step(model, m.Probe(ok=True, started_at=t, own=False, holder="pid 99 python3"), t + 0.01)
        assert model.state is State.STARTING
        assert model.health_ok is False
    assert model.port_holder == "pid 99 python3"
    assert model.failures == 4
    model, acts = step(model, m.Tick(), 20.0)
    assert model.state is State.CRASHED
    assert "did not become healthy within 20 s" in model.error
    assert "pid 99 python3" in model.error


def test_the_own_answer_is_running_and_clears_the_holder():
    model = replace(starting(), port_holder="pid 99 python3")
    model, acts = step(model, m.Probe(ok=True, started_at=1.0, own=True), 1.1)
    assert model.state is State.RUNNING
    assert model.port_holder is None
    assert model.identified_at == 1.1


def test_while_running_the_holder_is_checked_every_few_seconds_only():
    model, _ = step(starting(), m.Probe(ok=True, started_at=1.0, own=True), 1.0)
    model, acts = step(model, m.Probe(ok=True, started_at=2.0), 2.0)
    assert acts == []
    assert model.state is State.RUNNING
    probe = m.Probe(ok=True, started_at=6.0)
    model, acts = step(model, probe, 6.0)
    assert acts == [m.Identify(probe)]


def test_a_foreign_holder_while_running_counts_as_failed_probes():
    model, _ = step(starting(), m.Probe(ok=True, started_at=1.0, own=True), 1.0)
    for t in (10.0, 11.0, 12.0):
        model, acts = step(model, m.Probe(ok=True, started_at=t, own=False, holder="pid 7 nc"), t)
        assert model.state is State.RUNNING
    # foreign answers are no answers: hung once none of its own came for the hang window (issue 14)
    model, acts = step(model, m.Probe(ok=True, started_at=22.0, own=False, holder="pid 7 nc"), 22.0)
    assert model.state is State.CRASHED
    assert "pid 7 nc" in model.error


def test_a_reap_that_finds_another_holder_says_so_and_a_free_port_forgets_it():
    model = replace(starting(), state=State.CRASHED, error="exited", supervisor_state="EXITED")
    model, _ = step(model, m.Reaped(foreign_holders=("pid 5 nginx",), port_free=False), 1.0)
    assert model.port_holder == "pid 5 nginx"
    assert "pid 5 nginx" in model.error
    model, _ = step(model, m.Reaped(port_free=True), 2.0)
    assert model.port_holder is None


def test_the_state_document_names_the_holder():
    from sidecar_plugin.core.options.listen_args import ListenerOptions
    from sidecar_plugin.core.state.schema import state_document

    model = replace(starting(), port_holder="pid 5 nginx")
    opts = ListenerOptions(program="p", port=1234, state_file="/x/state.json", log_file="/x/l.log")
    assert state_document(model, opts, 1.0, 1, [], None)["port_holder"] == "pid 5 nginx"
