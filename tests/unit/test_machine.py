"""The listener's decisions, transition by transition, as data: no process, no clock."""

from dataclasses import replace

import pytest

from sidecar_plugin.core.listener import lifecycle, machine as m
from sidecar_plugin.names import State

CFG = m.Config(health_timeout=20.0, failure_threshold=3)


def run(model, *inputs, now=100.0):
    actions = []
    for inp in inputs:
        model, acts = m.step(model, inp, now, CFG)
        actions.extend(acts)
    return model, actions


def kinds(actions):
    return [type(a).__name__ for a in actions]


def running(pid=10, since=50.0):
    return m.Model(state=State.RUNNING, since=since, pid=pid, supervisor_state="RUNNING", health_ok=True)


def test_zero_model_reads_stopped():
    assert m.Model().state is State.STOPPED


def test_starting_then_running_event_then_healthy_probe():
    model, acts = run(m.Model(), m.ProcEvent("STARTING", asked=True), now=10)
    assert model.state is State.STARTING
    assert model.since == 10
    assert kinds(acts) == ["Write"]
    model, acts = run(model, m.ProcEvent("RUNNING", pid=42), now=11)
    assert model.state is State.STARTING
    assert model.pid == 42
    assert model.since == 10
    assert kinds(acts) == ["Watch", "Write"]
    assert acts[0].pid == 42
    model, acts = run(model, m.Probe(ok=True, started_at=12, latency_ms=1.5, own=True), now=12)
    assert model.state is State.RUNNING
    assert model.since == 12
    assert kinds(acts) == ["Write"]
    assert model.latency_ms == 1.5
    assert model.failures == 0


def test_probe_started_before_the_state_was_entered_is_ignored():
    model = replace(running(), state=State.STARTING, since=20)
    out, acts = run(model, m.Probe(ok=True, started_at=19.9), now=21)
    assert out.state is State.STARTING
    assert acts == []


def test_probes_are_ignored_when_not_live():
    for model in (m.Model(), replace(running(), stopping=True), replace(running(), supervisor_state="EXITED")):
        out, acts = run(model, m.Probe(ok=False, started_at=200), now=201)
        assert acts == []
        assert out == model


def test_hang_failures_for_the_whole_window_crash_and_kill():
    model = running(since=50.0)  # no answer since 50: the hang window (20 s) ends at 70
    model, acts = run(model, m.Probe(False, 60, detail="no answer"), m.Probe(False, 61, detail="no answer"), now=62)
    assert model.state is State.RUNNING
    assert model.failures == 2
    assert acts == []
    model, acts = run(model, m.Probe(False, 62, detail="no complete answer within 10 s"), now=63)
    assert model.state is State.RUNNING
    assert acts == []  # three failures, but only 13 s of silence
    model, acts = run(model, m.Tick(), now=70)
    assert model.state is State.CRASHED
    assert model.halted == "hung"
    assert model.since == 70
    assert "stopped answering" in model.error
    assert "no complete answer within 10 s" in model.error
    assert kinds(acts) == ["CaptureLogTail", "Write", "KillHung"]


def test_a_good_probe_resets_the_failure_count():
    model, _ = run(running(), m.Probe(False, 60), m.Probe(False, 61), m.Probe(True, 62, own=True), m.Probe(False, 63), now=64)
    assert model.state is State.RUNNING
    assert model.failures == 1


def test_hung_restart_exited_then_start_program_and_back_to_starting():
    model = replace(running(), state=State.CRASHED, since=63, halted="hung", error="stopped answering")
    model, acts = run(model, m.Died(pid=10, supervisor_state="RUNNING", asked=True), now=64)
    assert model.state is State.CRASHED
    assert model.error == "stopped answering"
    assert kinds(acts) == ["Reap"]
    model, acts = run(model, m.ProcEvent("EXITED", pid=10, expected=False, from_state="RUNNING"), now=65)
    assert model.state is State.CRASHED
    assert "StartProgram" in kinds(acts)
    assert model.since == 63
    model, _ = run(model, m.ProcEvent("STARTING", asked=True), now=66)
    assert model.state is State.STARTING
    assert model.error is None
    assert model.halted is None


def test_death_of_watched_pid_is_a_crash_before_supervisord_notices():
    model, acts = run(running(), m.Died(pid=10, supervisor_state="RUNNING", asked=True), now=70)
    assert model.state is State.CRASHED
    assert model.since == 70
    assert model.pid is None
    assert "exited unexpectedly" in model.error
    assert kinds(acts) == ["CaptureLogTail", "Write", "Reap"]
    # the EXITED event that follows keeps the first reason and time
    later, acts = run(model, m.ProcEvent("EXITED", pid=10, expected=False), now=71)
    assert later.state is State.CRASHED
    assert later.since == 70
    assert later.error == model.error
    assert "Reap" in kinds(acts)


def test_death_of_another_pid_is_ignored():
    model = running(pid=10)
    assert run(model, m.Died(pid=99)) == (model, [])


def test_death_during_a_stop_is_not_a_crash():
    model = replace(running(), stopping=True, state=State.STOPPED, supervisor_state="STOPPING")
    out, acts = run(model, m.Died(pid=10, supervisor_state="STOPPING", asked=True))
    assert out.state is State.STOPPED
    assert kinds(acts) == ["Reap"]
    # supervisord already STOPPING but its event not seen yet: still a stop
    out, acts = run(running(), m.Died(pid=10, supervisor_state="STOPPING", asked=True))
    assert out.state is State.RUNNING
    assert kinds(acts) == ["Reap"]


def test_a_death_asked_once_supervisord_runs_another_is_judged_by_its_exit_event_a_stop():
    """apply's restart (stop, then start) seen late: the pid watch's death is asked once the new one starts.

    A fresh-clone run's ansible test: the STOPPING event was still queued, supervisord already said
    STARTING (pid 11), and the stop was recorded as "exited unexpectedly (pid 10)", failing the apply.
    """
    model, acts = run(running(), m.Died(pid=10, at=69.5, supervisor_state="STARTING", supervisor_pid=11, asked=True),
                      now=70)
    assert model.state is State.RUNNING
    assert model.pid is None
    assert model.died_pid == 10
    assert model.supervisor_state is None  # unknown until the event: nothing probed meanwhile
    assert kinds(acts) == ["Reap"]  # the old tree's survivors, the new process spared
    assert (acts[0].before, acts[0].spare) == (69.5, 11)
    model, acts = run(model, m.ProcEvent("STOPPING", pid=10), m.ProcEvent("STOPPED", pid=10), now=71)
    assert model.state is State.STOPPED
    assert model.error is None
    assert "Reap" in kinds(acts)
    model, acts = run(model, m.ProcEvent("STARTING", pid=11, asked=True), now=72)
    assert model.state is State.STARTING
    assert model.pid == 11
    assert sum(n for _, n in model.counters.crashes) == 0


def test_a_death_asked_once_supervisord_runs_another_is_judged_by_its_exit_event_a_crash():
    model, acts = run(running(), m.Died(pid=10, supervisor_state="STARTING", supervisor_pid=11, asked=True), now=70)
    assert kinds(acts) == ["Reap"]
    model, acts = run(model, m.ProcEvent("EXITED", pid=10, expected=False, from_state="RUNNING"), now=71)
    assert model.state is State.CRASHED
    assert "exited unexpectedly" in model.error
    assert model.since == 71
    assert kinds(acts) == ["CaptureLogTail", "Write", "Reap"]


def test_a_death_asked_late_then_its_events_dropped_the_new_process_is_judged_as_a_start():
    """The exit events lost (supervisord's buffer overflowed): TICKs replay the new process as a start.

    It is watched from STARTING (judged by its progress), never taken for the old process still RUNNING
    (whose last answer a hang window would measure it by), and nothing is probed before the replay.
    """
    model, _ = run(running(), m.Died(pid=10, supervisor_state="STARTING", supervisor_pid=11, asked=True), now=70)
    model, acts = run(model, m.Probe(False, 71, detail="refused"), now=72)
    assert model.failures == 0  # not probing: supervisord's state unknown
    assert acts == []
    model, _ = run(model, m.Observed("RUNNING", 11), now=75)
    model, acts = run(model, m.Observed("RUNNING", 11), now=80)
    assert model.state is State.STARTING
    assert model.pid == 11
    assert model.since == 80
    assert model.counters.starts == 1
    assert "Watch" in kinds(acts)


def test_a_replayed_start_is_counted_once():
    model = m.Model(state=State.CRASHED, since=60, supervisor_state="EXITED", error="exited unexpectedly")
    model, _ = run(model, m.Observed("STARTING", 11), now=70)
    model, _ = run(model, m.Observed("STARTING", 11), now=71)
    assert model.state is State.STARTING
    assert model.counters.starts == 1
    assert model.counters.restarts == 1


@pytest.mark.parametrize("event, words", [
    (m.ProcEvent("EXITED", pid=10, expected=False, from_state="RUNNING"), "exited unexpectedly"),
    (m.ProcEvent("BACKOFF", from_state="STARTING"), "BACKOFF"),
    (m.ProcEvent("FATAL", from_state="BACKOFF"), "FATAL"),
])
def test_exit_backoff_fatal_are_crashes_with_log_tail_and_reap(event, words):
    model, acts = run(running(), event, now=80)
    assert model.state is State.CRASHED
    assert words in model.error
    assert model.since == 80
    assert kinds(acts) == ["CaptureLogTail", "Write", "Reap"]


def test_clean_stop_writes_stopped_and_reaps_before_the_final_write():
    model, acts = run(running(), m.ProcEvent("STOPPING", pid=10), now=90)
    assert model.state is State.STOPPED
    assert model.supervisor_state == "STOPPING"
    assert kinds(acts) == ["Write"]
    model, acts = run(model, m.ProcEvent("STOPPED", pid=10), now=91)
    assert model.state is State.STOPPED
    assert model.since == 90
    assert model.supervisor_state == "STOPPED"
    assert kinds(acts) == ["Reap"]
    model, acts = run(model, m.Reaped(killed=1), now=91)
    assert kinds(acts) == ["Write"]


def test_health_timeout_crashes_and_stops_through_supervisord_and_stays_crashed():
    model, _ = run(m.Model(), m.ProcEvent("STARTING", asked=True), now=0)
    model, acts = run(model, m.Tick(), now=19.9)
    assert model.state is State.STARTING
    assert acts == []
    model, acts = run(model, m.Tick(), now=20.0)
    assert model.state is State.CRASHED
    assert model.error == "did not become healthy within 20 s"
    assert kinds(acts) == ["CaptureLogTail", "Write", "StopProgram"]
    model, _ = run(model, m.ProcEvent("STOPPING"), m.ProcEvent("STOPPED"), m.Reaped(), now=21)
    assert model.state is State.CRASHED
    assert model.error == "did not become healthy within 20 s"
    assert model.since == 20.0


def test_foreign_port_holder_is_named_in_the_error():
    model, _ = run(running(), m.ProcEvent("FATAL"), now=5)
    model, acts = run(model, m.Reaped(foreign_holders=("pid 7 nginx",)), now=5)
    assert "held by another process (pid 7 nginx)" in model.error
    assert kinds(acts) == ["Write"]
    again, _ = run(model, m.Reaped(foreign_holders=("pid 7 nginx",)), now=6)
    assert again.error == model.error


def test_recover_running_same_pid_keeps_since_no_flap():
    rec = m.Recover("RUNNING", 10, prior_state=State.RUNNING, prior_since=33.0, prior_pid=10)
    model, acts = run(m.Model(), rec, now=100)
    assert model.state is State.RUNNING
    assert model.since == 33.0
    assert kinds(acts) == ["Watch", "Write", "Reap"]


def test_recover_running_other_pid_is_starting():
    rec = m.Recover("RUNNING", 11, prior_state=State.RUNNING, prior_since=33.0, prior_pid=10)
    model, _ = run(m.Model(), rec, now=100)
    assert model.state is State.STARTING
    assert model.since == 100
    assert model.starting_since == 100


def test_recover_stopped_keeps_since_and_reaps():
    rec = m.Recover("STOPPED", None, prior_state=State.STOPPED, prior_since=5.0)
    model, acts = run(m.Model(), rec, now=100)
    assert model.state is State.STOPPED
    assert model.since == 5.0
    assert kinds(acts) == ["Reap"]


def test_recover_fatal_keeps_prior_crash():
    rec = m.Recover("FATAL", None, prior_state=State.CRASHED, prior_since=5.0, prior_error="boom",
                    prior_log_tail=("a",))
    model, _ = run(m.Model(), rec, now=100)
    assert (model.state, model.since, model.error, model.log_tail) == (State.CRASHED, 5.0, "boom", ("a",))
    fresh, acts = run(m.Model(), m.Recover("FATAL", None), now=100)
    assert fresh.state is State.CRASHED
    assert "FATAL" in fresh.error
    assert "CaptureLogTail" in kinds(acts)


def test_unknown_event_state_only_updates_supervisor_state():
    model, acts = run(running(), m.ProcEvent("UNKNOWN"))
    assert model.state is State.RUNNING
    assert model.supervisor_state == "UNKNOWN"


def test_fatal_after_a_watched_death_names_fatal_and_keeps_the_time():
    model, _ = run(running(), m.Died(pid=10, supervisor_state="STARTING", asked=True), now=70)
    model, _ = run(model, m.ProcEvent("FATAL", from_state="BACKOFF"), now=75)
    assert model.state is State.CRASHED
    assert "FATAL" in model.error
    assert model.since == 70


def test_recover_while_supervisord_still_says_starting_keeps_running():
    rec = m.Recover("STARTING", 10, prior_state=State.RUNNING, prior_since=33.0, prior_pid=10)
    model, acts = run(m.Model(), rec, now=100)
    assert model.state is State.RUNNING
    assert model.since == 33.0
    assert kinds(acts) == ["Watch", "Write", "Reap"]
    model, _ = run(model, m.ProcEvent("RUNNING", pid=10), now=101)
    assert model.state is State.RUNNING
    assert model.since == 33.0


def test_late_starting_event_of_the_pid_recovery_saw_is_no_new_start():
    # the listener started while supervisord was starting the sidecar: the queued STARTING comes after
    rec = m.Recover("STARTING", 10)
    model, _ = run(m.Model(), rec, m.Probe(ok=True, started_at=100, latency_ms=1.0, own=True), now=100)
    assert model.state is State.RUNNING
    model, acts = run(model, m.ProcEvent("STARTING", pid=10), now=101)
    assert model.state is State.RUNNING
    assert model.since == 100
    assert acts == []
    # a STARTING of another pid is a new start
    model, _ = run(model, m.ProcEvent("STARTING", pid=11), now=102)
    assert model.state is State.STARTING
    assert model.pid == 11


def test_late_starting_event_asked_once_supervisord_says_running_is_no_new_start():
    # the STARTING queued while the listener started is delivered after supervisord's RUNNING: the shell asks,
    # supervisord says RUNNING with the pid recovery already follows; the answer fills the pid in
    rec = m.Recover("STARTING", 10)
    model, _ = run(m.Model(), rec, m.Probe(ok=True, started_at=100, latency_ms=1.0, own=True), now=100)
    model, acts = m.step(model, m.ProcEvent("STARTING"), 101)
    assert acts == [m.Ask(m.ProcEvent("STARTING"))]
    asked = lifecycle.answered(m.ProcEvent("STARTING"), "RUNNING", 10)
    assert asked.pid == 10
    model, acts = run(model, asked, now=101)
    assert model.state is State.RUNNING
    assert model.since == 100
    assert model.counters.starts == 1
    # a STARTING asked while nothing lives keeps no pid
    assert lifecycle.answered(m.ProcEvent("STARTING"), "BACKOFF", 10).pid is None


def test_late_exit_event_of_a_replaced_pid_is_counted_once():
    # SIGKILL of pid 10: the pid watch sees it first (one crash); a TICK's question finds the replacement 11
    # starting; supervisord's EXITED of 10 is delivered after that: no second crash, 11 still followed
    model, _ = run(running(pid=10), m.Died(10, at=100, supervisor_state="RUNNING", asked=True), now=100)
    assert model.state is State.CRASHED
    assert model.counters.crash_count("exited") == 1
    model, _ = run(model, m.ProcEvent("STARTING", pid=11), now=100.3)
    assert model.state is State.STARTING
    before = model
    model, acts = run(model, m.ProcEvent("EXITED", pid=10, expected=False, from_state="RUNNING"), now=100.4)
    assert model == before
    assert acts == []
    assert model.counters.crash_count("exited") == 1
    model, _ = run(model, m.ProcEvent("RUNNING", pid=11), now=101)
    assert model.pid == 11
    # the same kill seen the other way: supervisord's RUNNING of 10 (it noticed the start as the process died)
    # delivered after the watch saw 10 die, then its EXITED: one crash, no start of a dead process
    model, _ = run(running(pid=10), m.Died(10, at=100, supervisor_state="RUNNING", asked=True), now=100)
    model, acts = run(model, m.ProcEvent("RUNNING", pid=10), now=100.1)
    assert model.state is State.CRASHED
    assert acts == []
    model, _ = run(model, m.ProcEvent("EXITED", pid=10, expected=False, from_state="RUNNING"), now=100.2)
    model, _ = run(model, m.ProcEvent("STARTING", pid=11), m.ProcEvent("RUNNING", pid=11), now=100.3)
    assert model.state is State.STARTING
    assert model.pid == 11
    assert model.counters.crash_count("exited") == 1
    assert model.counters.starts == 1
    # the exit of the pid it follows is a crash, as before
    model, _ = run(running(pid=11), m.ProcEvent("EXITED", pid=11, expected=False, from_state="RUNNING"), now=102)
    assert model.state is State.CRASHED


def test_reconcile_replays_lost_events():
    # in line: nothing to replay
    assert m.reconcile(running(pid=10), "RUNNING", 10) == []
    # a lost STARTING/RUNNING while the model thinks it is stopped
    stopped = m.Model(supervisor_state="STOPPED", stopping=True, state=State.STOPPED)
    evs = m.reconcile(stopped, "RUNNING", 42)
    assert [e.state for e in evs] == ["STARTING", "RUNNING"]
    assert all(e.pid == 42 for e in evs)
    model, _ = run(stopped, *evs, now=5)
    assert model.state is State.STARTING
    assert model.pid == 42
    assert model.probing
    # a lost stop
    evs = m.reconcile(running(pid=10), "STOPPED", None)
    assert [e.state for e in evs] == ["STOPPED"]
    # a restart under another pid while events were lost
    evs = m.reconcile(running(pid=10), "RUNNING", 11)
    assert [e.state for e in evs] == ["STARTING", "RUNNING"]
    # supervisord STARTING -> RUNNING with the same pid
    model = replace(running(pid=10), supervisor_state="STARTING", state=State.STARTING)
    assert [e.state for e in m.reconcile(model, "RUNNING", 10)] == ["RUNNING"]
