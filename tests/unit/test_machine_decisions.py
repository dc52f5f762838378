"""The listener's other decisions, as data: replay of lost events, counters, config version,
what a reap spares, when supervisord is asked. Each used to live in the listener's shell."""

from dataclasses import replace

from sidecar_plugin.core.listener import machine as m
from sidecar_plugin.names import State

CFG = m.Config(health_timeout=20.0, failure_threshold=3)


def step(model, inp, now=100.0):
    return m.step(model, inp, now, CFG)


def running(pid=10, since=50.0):
    return m.Model(state=State.RUNNING, since=since, pid=pid, supervisor_state="RUNNING", health_ok=True)


# ---- replay of lost events: two TICKs must agree ----------------------------------

def test_a_tick_asks_supervisord():
    assert step(running(), m.SupervisorTick()) == (running(), [m.Query()])


def test_a_difference_seen_on_one_tick_only_is_not_replayed():
    # supervisord already restarted the sidecar; its EXITED/STARTING events are still on their way
    model, acts = step(running(), m.Observed("STARTING", 11))
    assert acts == []
    assert model.state is State.RUNNING
    assert model.pid == 10
    assert model.mismatch == ("STARTING", 11)
    # the events arrive; the next tick agrees with the model: nothing replayed, the mismatch forgotten
    arrived = replace(model, state=State.STARTING, supervisor_state="STARTING", pid=11)
    model, acts = step(arrived, m.Observed("STARTING", 11))
    assert acts == []
    assert model.mismatch is None
    assert model.state is State.STARTING


def test_a_difference_seen_on_two_ticks_is_replayed():
    model, _ = step(running(), m.Observed("STARTING", 11), now=100)
    model, acts = step(model, m.Observed("STARTING", 11), now=105)
    assert model.state is State.STARTING
    assert model.pid == 11
    assert model.since == 105
    assert m.Watch(11) in acts
    assert model.mismatch is None


def test_two_different_differences_are_not_replayed():
    model, _ = step(running(), m.Observed("STARTING", 11))
    model, acts = step(model, m.Observed("STARTING", 12))
    assert acts == []
    assert model.pid == 10
    assert model.mismatch == ("STARTING", 12)


def test_a_lost_exit_is_replayed_as_a_crash():
    model, _ = step(running(), m.Observed("EXITED", None))
    model, acts = step(model, m.Observed("EXITED", None), now=110)
    assert model.state is State.CRASHED
    assert model.since == 110
    assert any(isinstance(a, m.Reap) for a in acts)


# ---- asking supervisord ---------------------------------------------------------------

def test_starting_without_pid_is_asked_about_first():
    ev = m.ProcEvent("STARTING", at=99.0)
    model, acts = step(m.Model(), ev)
    assert model == m.Model()
    assert acts == [m.Ask(ev)]
    model, acts = step(model, replace(ev, pid=42, asked=True))
    assert model.state is State.STARTING
    assert model.pid == 42
    assert m.Watch(42) in acts


def test_death_of_the_watched_pid_is_asked_about_first():
    died = m.Died(pid=10, at=99.5)
    model, acts = step(running(), died)
    assert model == running()
    assert acts == [m.Ask(died)]
    assert step(running(), m.Died(pid=11)) == (running(), [])  # not ours: no question


# ---- what a reap spares ---------------------------------------------------------------

def test_reap_kills_only_what_was_born_before_the_exit_was_seen():
    model, acts = step(running(), m.Died(pid=10, supervisor_state="RUNNING", at=98.25, asked=True), now=100)
    reaps = [a for a in acts if isinstance(a, m.Reap)]
    assert reaps == [m.Reap(before=98.25, spare=None)]


def test_reap_spares_the_process_supervisord_runs_after_recovery():
    rec = m.Recover(supervisor_state="RUNNING", pid=77, prior_state=State.RUNNING, prior_since=1.0, prior_pid=70)
    _, acts = step(m.Model(), rec, now=100)
    assert m.Reap(before=100, spare=77) in acts


def test_reap_after_a_stop_event_uses_the_event_time():
    model = replace(running(), supervisor_state="STOPPING", stopping=True)
    _, acts = step(model, m.ProcEvent("STOPPED", at=97.0), now=100)
    assert acts == [m.Reap(before=97.0, spare=None)]


def test_a_reap_result_records_whether_the_port_is_free():
    model, _ = step(replace(running(), state=State.STOPPED), m.Reaped(port_free=True))
    assert model.port_free is True
    model, _ = step(model, m.ProcEvent("STARTING", pid=12))
    assert model.port_free is None


# ---- counters -------------------------------------------------------------------------

def test_counters_follow_the_transitions():
    model, _ = step(m.Model(), m.ProcEvent("STARTING", pid=10), now=1)
    model, _ = step(model, m.Probe(ok=True, started_at=2, own=True), now=2)
    for t in (3, 4, 22):
        model, _ = step(model, m.Probe(ok=False, started_at=t, detail="refused"), now=t)
    assert model.state is State.CRASHED
    assert model.halted == "hung"
    model, _ = step(model, m.ProcEvent("STARTING", pid=11), now=23)
    c = model.counters
    assert (c.starts, c.restarts, c.crash_count("hung"), c.crash_count("exited")) == (2, 1, 1, 0)


def test_recovery_adopts_counters_and_counts_only_a_change_from_the_old_file():
    saved = {"starts": 4, "restarts": 2, "crashes": {"hung": 1}}
    same = m.Recover(supervisor_state="RUNNING", pid=7, prior_state=State.RUNNING, prior_since=1.0,
                     prior_pid=7, prior_counters=saved)
    model, _ = step(m.Model(), same)
    assert model.counters.starts == 4
    assert model.counters.crash_count("hung") == 1
    found_down = replace(same, supervisor_state="EXITED", pid=None)
    model, _ = step(m.Model(), found_down)
    assert model.state is State.CRASHED
    assert model.counters.crash_count("found_down") == 1


# ---- the config version the sidecar runs ---------------------------------------------------

def test_a_new_process_records_the_config_it_reads_the_same_one_keeps_its_own():
    model, _ = step(running(), m.ConfigLoaded(10, "v1"))
    assert (model.config_version, model.version_pid) == ("v1", 10)
    model, _ = step(model, m.ConfigLoaded(10, "v2"))  # a re-render while it runs: not what it loaded
    assert model.config_version == "v1"
    model, _ = step(model, m.ConfigLoaded(11, "v2"))
    assert (model.config_version, model.version_pid) == ("v2", 11)


def test_recovery_keeps_the_version_the_previous_listener_recorded():
    rec = m.Recover(supervisor_state="RUNNING", pid=7, prior_state=State.RUNNING, prior_since=1.0, prior_pid=7,
                    prior_config_version="v1")
    model, _ = step(m.Model(), rec)
    model, _ = step(model, m.ConfigLoaded(7, "v2"))
    assert model.config_version == "v1"


def test_log_tail_arrives_as_an_input():
    model, acts = step(running(), m.LogTail(("a", "b")))
    assert model.log_tail == ("a", "b")
    assert acts == [m.Write()]
