"""Recovery without a person, as data: the backoff schedule, when a retry is scheduled, fired,
cancelled and forgotten, and that an operator's stop is never undone."""

from dataclasses import replace

import pytest

from sidecar_plugin.core.listener import machine as m
from sidecar_plugin.core.listener.retry import Backoff, START_SEEN_WITHIN
from sidecar_plugin.names import State

BACKOFF = Backoff(first=10.0, cap=300.0, reset_after=600.0)
CFG = m.Config(health_timeout=20.0, failure_threshold=3, backoff=BACKOFF)


def step(model, inp, now):
    return m.step(model, inp, now, CFG)


def kinds(actions):
    return [type(a).__name__ for a in actions]


def starting(pid=10, since=0.0):
    return m.Model(state=State.STARTING, since=since, pid=pid, supervisor_state="RUNNING", starting_since=since)


def timed_out(now=20.0):
    model, acts = step(starting(), m.Tick(), now)
    assert model.state is State.CRASHED
    assert "StopProgram" in kinds(acts)
    return model


# ---- the schedule ----------------------------------------------------------------------

def test_delays_double_up_to_the_cap():
    assert [BACKOFF.delay(n) for n in range(1, 8)] == [10, 20, 40, 80, 160, 300, 300]
    assert BACKOFF.delay(10_000) == 300  # no overflow however long it has failed


# ---- when a retry is scheduled -------------------------------------------------------------

def test_a_health_timeout_schedules_the_first_retry():
    model = timed_out(now=20.0)
    assert (model.retry_attempt, model.retry_at, model.retry_delay) == (1, 30.0, 10.0)


def test_the_listeners_own_stop_after_a_timeout_keeps_crashed_and_the_retry():
    model = timed_out(now=20.0)
    model, _ = step(model, m.ProcEvent("STOPPING", pid=10), 20.1)
    model, acts = step(model, m.ProcEvent("STOPPED", at=20.5), 20.5)
    assert model.state is State.CRASHED
    assert model.retry_at == 30.0
    assert model.retry_attempt == 1
    assert "did not become healthy" in model.error


def test_fatal_schedules_a_retry_and_backoff_does_not():
    model = replace(starting(), supervisor_state="STARTING")
    model, _ = step(model, m.ProcEvent("BACKOFF", from_state="STARTING"), 1.0)
    assert model.state is State.CRASHED
    assert model.retry_at is None  # supervisord still retries
    model, acts = step(model, m.ProcEvent("FATAL", from_state="BACKOFF"), 5.0)
    assert model.state is State.CRASHED
    assert model.retry_attempt == 1
    assert model.retry_at == 15.0
    assert "Write" in kinds(acts)


def test_an_exit_after_running_is_left_to_supervisords_autorestart():
    model = m.Model(state=State.RUNNING, since=0, pid=10, supervisor_state="RUNNING", health_ok=True)
    model, _ = step(model, m.ProcEvent("EXITED", from_state="RUNNING", expected=False), 5.0)
    assert model.state is State.CRASHED
    assert model.retry_at is None
    assert model.retry_attempt == 0


# ---- firing, and what follows ----------------------------------------------------------------

def test_the_retry_fires_when_due_and_stays_published_until_the_start_is_seen():
    model = timed_out(now=20.0)
    model, acts = step(model, m.ProcEvent("STOPPED", at=21), 21)
    model, acts = step(model, m.Tick(), 29.9)
    assert acts == []
    model, acts = step(model, m.Tick(), 30.0)
    assert kinds(acts) == ["StartProgram"]
    assert model.state is State.CRASHED
    assert model.retry_at == 30.0  # still published: a stop must not read this as "stopped"
    model, acts = step(model, m.Tick(), 30.5)
    assert acts == []  # asked once
    model, acts = step(model, m.ProcEvent("STARTING", pid=11), 30.6)
    assert model.state is State.STARTING
    assert model.retry_at is None
    assert model.retry_attempt == 1


def test_each_failed_try_doubles_the_delay():
    model = timed_out(now=20.0)
    delays = [model.retry_delay]
    now = 20.0
    for _ in range(6):
        now = model.retry_at
        model, _ = step(model, m.Tick(), now)
        model, _ = step(model, m.ProcEvent("STARTING", pid=11), now + 0.1)
        model, _ = step(model, m.ProcEvent("BACKOFF", from_state="STARTING"), now + 1)
        model, _ = step(model, m.ProcEvent("FATAL", from_state="BACKOFF"), now + 2)
        delays.append(model.retry_delay)
        assert model.retry_at == now + 2 + model.retry_delay
    assert delays == [10, 20, 40, 80, 160, 300, 300]
    assert model.retry_attempt == 7


def test_a_start_supervisord_never_made_is_asked_again_later():
    model = timed_out(now=20.0)
    model, acts = step(model, m.Tick(), 30.0)
    assert kinds(acts) == ["StartProgram"]
    model, acts = step(model, m.Tick(), 30.0 + START_SEEN_WITHIN)
    assert model.retry_attempt == 2
    assert model.retry_at == 30.0 + START_SEEN_WITHIN + 20.0
    assert "Write" in kinds(acts)


def test_healthy_long_enough_forgets_the_count():
    model = replace(starting(since=100.0), retry_attempt=3)
    model, _ = step(model, m.Probe(ok=True, started_at=101, own=True), 101.0)
    assert model.state is State.RUNNING
    assert model.retry_attempt == 3
    model, acts = step(model, m.Tick(), 101.0 + 599)
    assert model.retry_attempt == 3
    assert acts == []
    model, acts = step(model, m.Tick(), 101.0 + 600)
    assert model.retry_attempt == 0
    assert kinds(acts) == ["Write"]


# ---- an operator's stop is never undone --------------------------------------------------------

def test_an_operators_stop_while_running_is_stopped_with_no_retry():
    model = m.Model(state=State.RUNNING, since=0, pid=10, supervisor_state="RUNNING", health_ok=True, retry_attempt=2)
    model, _ = step(model, m.ProcEvent("STOPPING", pid=10), 5.0)
    model, _ = step(model, m.ProcEvent("STOPPED", at=5.5), 5.5)
    assert model.state is State.STOPPED
    assert model.retry_attempt == 0
    assert model.retry_at is None
    for t in (100.0, 1000.0, 10_000.0):
        model, acts = step(model, m.Tick(), t)
        assert "StartProgram" not in kinds(acts)


def test_an_operators_stop_during_the_wait_cancels_the_retry():
    model = timed_out(now=20.0)
    model, _ = step(model, m.ProcEvent("STOPPED", at=21), 21)
    model, acts = step(model, m.OperatorStop(at=25), 25.0)
    assert model.state is State.STOPPED
    assert model.retry_at is None
    assert model.retry_attempt == 0
    assert model.error is None
    assert kinds(acts) == ["Write"]  # already down: nothing to stop
    for t in (30.0, 1000.0):
        model, acts = step(model, m.Tick(), t)
        assert acts == []


def test_an_operators_stop_just_after_a_retry_started_it_stops_it():
    model = timed_out(now=20.0)
    model, _ = step(model, m.ProcEvent("STOPPED", at=21), 21)
    model, _ = step(model, m.Tick(), 30.0)
    model, _ = step(model, m.ProcEvent("STARTING", pid=11), 30.1)
    model, acts = step(model, m.OperatorStop(at=30.2), 30.2)
    assert model.state is State.STOPPED
    assert kinds(acts) == ["StopProgram", "Write"]
    model, _ = step(model, m.ProcEvent("STOPPING", pid=11), 30.3)
    model, _ = step(model, m.ProcEvent("STOPPED", at=30.5), 30.5)
    assert model.state is State.STOPPED
    assert model.retry_at is None


def test_an_operators_stop_after_a_retry_was_asked_for_but_not_yet_seen_stops_it():
    model = timed_out(now=20.0)
    model, _ = step(model, m.ProcEvent("STOPPED", at=21), 21)
    model, _ = step(model, m.Tick(), 30.0)  # StartProgram: supervisord spawns it, its STARTING is on its way
    model, acts = step(model, m.OperatorStop(at=30.05), 30.05)
    assert model.state is State.STOPPED
    assert kinds(acts) == ["StopProgram", "Write"]
    model, _ = step(model, m.ProcEvent("STARTING", pid=11), 30.1)
    model, _ = step(model, m.ProcEvent("STOPPING", pid=11), 30.2)
    model, _ = step(model, m.ProcEvent("STOPPED", at=30.3), 30.3)
    assert model.state is State.STOPPED
    assert model.retry_at is None
    assert model.retry_attempt == 0


def test_a_stop_already_recorded_ignores_a_repeated_operator_stop():
    model = m.Model(state=State.STOPPED, since=5, supervisor_state="STOPPED")
    assert step(model, m.OperatorStop(), 6.0) == (model, [])


# ---- a listener restarted while retrying -------------------------------------------------------

@pytest.mark.parametrize("sup", ["STOPPED", "FATAL"])
def test_a_new_listener_keeps_the_count_and_the_time_of_the_next_try(sup):
    rec = m.Recover(supervisor_state=sup, pid=None, prior_state=State.CRASHED, prior_since=20.0,
                    prior_error="did not become healthy within 20 s", prior_log_tail=("x",),
                    prior_retry={"attempt": 3, "next_at": 70.0, "delay": 40.0})
    model, acts = step(m.Model(), rec, 50.0)
    assert model.state is State.CRASHED
    assert model.since == 20.0
    assert (model.retry_attempt, model.retry_at, model.retry_delay) == (3, 70.0, 40.0)
    model, acts = step(model, m.Tick(), 70.0)
    assert kinds(acts) == ["StartProgram"]


def test_a_new_listener_started_while_the_old_one_stops_a_failed_start_carries_on_its_reason():
    # apply restarted the listener while supervisord was still stopping a never-healthy start
    rec = m.Recover(supervisor_state="STOPPING", pid=33, prior_state=State.CRASHED, prior_since=20.0,
                    prior_pid=33, prior_error="did not become healthy within 20 s",
                    prior_retry={"attempt": 1, "next_at": 30.0, "delay": 10.0})
    model, acts = step(m.Model(), rec, 21.0)
    assert model.state is State.CRASHED
    assert model.error == "did not become healthy within 20 s"
    assert (model.retry_attempt, model.retry_at) == (1, 30.0)
    assert "Watch" in kinds(acts)
    model, acts = step(model, m.ProcEvent("STOPPED", at=25.0), 25.0)  # the stop completes
    assert model.state is State.CRASHED
    assert model.retry_at == 30.0
    assert "Reap" in kinds(acts)
    model, acts = step(model, m.Tick(), 30.0)
    assert kinds(acts) == ["StartProgram"]  # nobody but an operator stops it for good


@pytest.mark.parametrize("prior, retry", [(State.STOPPED, None), (State.RUNNING, None),
                                          (State.CRASHED, {"attempt": 0, "next_at": None, "delay": None})])
def test_a_new_listener_finding_a_stop_the_old_one_did_not_start_reads_an_operators_stop(prior, retry):
    rec = m.Recover(supervisor_state="STOPPING", pid=33, prior_state=prior, prior_since=20.0, prior_pid=33,
                    prior_retry=retry)
    model, _ = step(m.Model(), rec, 21.0)
    model, acts = step(model, m.ProcEvent("STOPPED", at=25.0), 25.0)
    assert model.state is State.STOPPED
    assert model.retry_at is None
    assert "StartProgram" not in kinds(step(model, m.Tick(), 1000.0)[1])


def test_a_new_listener_finding_an_operators_stop_does_not_retry():
    rec = m.Recover(supervisor_state="STOPPED", pid=None, prior_state=State.STOPPED, prior_since=20.0,
                    prior_retry={"attempt": 0, "next_at": None, "delay": None})
    model, _ = step(m.Model(), rec, 50.0)
    assert model.state is State.STOPPED
    assert model.retry_at is None
    model, acts = step(model, m.Tick(), 1000.0)
    assert acts == []


def test_a_new_listener_finding_fatal_schedules_a_retry():
    model, _ = step(m.Model(), m.Recover(supervisor_state="FATAL", pid=None), 50.0)
    assert model.state is State.CRASHED
    assert model.retry_attempt == 1
    assert model.retry_at == 60.0


def test_the_state_document_carries_the_retry():
    from sidecar_plugin.core.options.listen_args import ListenerOptions
    from sidecar_plugin.core.state.schema import state_document

    model = timed_out(now=20.0)
    opts = ListenerOptions(program="p", port=1234, state_file="/x/state.json", log_file="/x/l.log")
    doc = state_document(model, opts, 21.0, 1, [], model.error)
    assert doc["retry"] == {"attempt": 1, "next_at": 30.0, "delay": 10.0}
    doc = state_document(m.Model(), opts, 21.0, 1, [], None)
    assert doc["retry"] == {"attempt": 0, "next_at": None, "delay": None}
    assert doc["port_holder"] is None
