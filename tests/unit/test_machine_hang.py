"""Hung is not busy, and a rolling reload is no crash: the machine's rules as data (no process, no clock)."""

from dataclasses import replace

from sidecar_plugin.core.listener import machine as m
from sidecar_plugin.names import State

CFG = m.Config(health_timeout=20.0, failure_threshold=3, hang_window=20.0, stopped_grace=1.5, quiet_window=10.0)


def feed(model, timeline):
    """Step through ``[(now, input), ...]``; return the model and every action."""
    actions = []
    for now, inp in sorted(timeline, key=lambda item: item[0]):
        model, acts = m.step(model, inp, now, CFG)
        actions.extend(acts)
    return model, actions


def running(since=100.0):
    return m.Model(state=State.RUNNING, since=since, pid=10, supervisor_state="RUNNING", health_ok=True,
                   answered_at=since)


def test_slow_answers_that_keep_arriving_never_make_it_hung():
    # overload: every probe times out or answers late, but some answer arrives every 15 s, for ten minutes
    timeline = []
    for t in range(101, 700):
        timeline.append((t, m.Probe(ok=(t % 15 == 0), started_at=t - 3, latency_ms=3000, detail="late", own=True)))
        timeline.append((t + 0.5, m.Tick()))
        timeline.append((t + 0.6, m.TreeSigns(stopped=False, cpu=float(t))))
    model, actions = feed(running(), timeline)
    assert model.state is State.RUNNING
    assert not any(isinstance(a, m.KillHung) for a in actions)


def test_no_answer_for_the_window_is_hung():
    timeline = [(t, m.Probe(ok=False, started_at=t - 10, detail="no complete answer within 10 s"))
                for t in range(111, 120)]  # started from 101 on, each failing at its 10 s deadline
    model, actions = feed(running(), timeline + [(119.9, m.Tick())])
    assert model.state is State.RUNNING
    assert actions == []
    model, actions = feed(model, [(120.0, m.Tick())])
    assert model.state is State.CRASHED
    assert model.halted == "hung"
    assert "no answer for 20 s" in model.error
    assert "no complete answer within 10 s" in model.error
    assert [type(a).__name__ for a in actions] == ["CaptureLogTail", "Write", "KillHung"]


def test_a_window_without_failed_probes_is_no_hang():
    # silence alone (e.g. the prober was late) is not enough: probes must have failed
    model, actions = feed(running(), [(130.0, m.Tick())])
    assert model.state is State.RUNNING
    assert actions == []


def test_a_late_answer_restarts_the_window():
    timeline = [(t, m.Probe(ok=False, started_at=t - 3, detail="x")) for t in range(105, 119)]
    timeline += [(119.0, m.Probe(ok=True, started_at=108.0, latency_ms=11000, own=True)), (130.0, m.Tick())]
    model, actions = feed(running(), timeline)
    assert model.state is State.RUNNING
    assert model.answered_at == 119.0
    assert actions == []


def test_a_stopped_main_process_with_no_answer_is_hung_within_seconds():
    model, actions = feed(running(), [
        (101.0, m.TreeSigns(stopped=True, cpu=5.0)),
        (102.0, m.TreeSigns(stopped=True, cpu=5.0)),
    ])
    assert model.state is State.RUNNING
    assert model.stopped_at == 101.0
    assert actions == []
    model, actions = feed(model, [(102.5, m.Tick())])
    assert model.state is State.CRASHED
    assert model.halted == "hung"
    assert "SIGSTOP" in model.error
    assert any(isinstance(a, m.KillHung) for a in actions)


def test_a_stopped_parent_whose_workers_still_answer_is_not_hung():
    model, actions = feed(running(), [
        (101.0, m.TreeSigns(stopped=True, cpu=5.0)),
        (101.5, m.Probe(ok=True, started_at=101.2, latency_ms=3, own=True)),
        (103.0, m.TreeSigns(stopped=True, cpu=5.0)),
        (105.0, m.Tick()),
    ])
    assert model.state is State.RUNNING
    assert actions == []


def test_a_stop_that_ends_is_forgotten():
    model, _ = feed(running(), [(101.0, m.TreeSigns(stopped=True, cpu=1.0)), (101.2, m.TreeSigns(stopped=False, cpu=1.0))])
    assert model.stopped_at is None


def test_no_answer_and_no_cpu_for_the_quiet_window_is_hung_early():
    timeline = [(100.5, m.TreeSigns(stopped=False, cpu=7.0))]
    timeline += [(t, m.Probe(ok=False, started_at=t - 3, detail="no complete answer within 10 s"))
                 for t in (105, 108)]
    timeline += [(t + 0.5, m.TreeSigns(stopped=False, cpu=7.0)) for t in range(101, 110)]
    model, actions = feed(running(), timeline)
    assert model.state is State.RUNNING
    assert actions == []
    model, actions = feed(model, [(110.6, m.TreeSigns(stopped=False, cpu=7.0))])
    assert model.state is State.CRASHED
    assert "no CPU" in model.error


def test_no_answer_with_cpu_progress_waits_for_the_full_window():
    timeline = [(100.5, m.TreeSigns(stopped=False, cpu=7.0))]
    timeline += [(t, m.Probe(ok=False, started_at=t - 3, detail="x")) for t in (105, 108, 111, 114)]
    timeline += [(t + 0.5, m.TreeSigns(stopped=False, cpu=7.0 + t)) for t in range(101, 119)]
    model, actions = feed(running(), timeline)
    assert model.state is State.RUNNING
    assert actions == []


def test_hang_rules_sleep_while_starting_or_stopping():
    starting = replace(running(), state=State.STARTING, starting_since=100.0)
    stopping = replace(running(), stopping=True)
    for model in (starting, stopping):
        out, actions = feed(model, [(101.0, m.TreeSigns(stopped=True, cpu=1.0)), (104.0, m.TreeSigns(stopped=True))])
        assert out.state is model.state
        assert not any(isinstance(a, m.KillHung) for a in actions)


def test_a_restart_clears_the_progress_record():
    model, _ = feed(running(), [(101.0, m.TreeSigns(stopped=True, cpu=1.0))])
    model, _ = feed(model, [(102.0, m.ProcEvent("STARTING", pid=11, asked=True))])
    assert (model.stopped_at, model.answered_at, model.cpu_base, model.workers) == (None, None, None, ())


def test_recovery_starts_the_hang_window_at_the_recovery():
    rec = m.Recover(supervisor_state="RUNNING", pid=10, prior_state=State.RUNNING, prior_since=10.0, prior_pid=10)
    timeline = [(500.0, rec)] + [(t, m.Probe(ok=False, started_at=t - 1, detail="x")) for t in (501, 502, 503)]
    model, actions = feed(m.Model(), timeline)
    assert model.state is State.RUNNING
    assert not any(isinstance(a, m.KillHung) for a in actions)


# ---- a rolling worker replacement (SIGHUP): same main pid, new workers, new config version ----

def loaded(version="v1"):
    model, _ = feed(running(), [(100.0, m.ConfigLoaded(10, version)), (100.0, m.ConfigSeen(version, 90.0)),
                                (100.0, m.Workers((95.0, 96.0)))])
    return model


def test_config_version_follows_workers_born_after_the_change():
    model = loaded()
    assert model.config_version == "v1"
    model, actions = feed(model, [(200.0, m.ConfigSeen("v2", 199.0))])
    assert model.config_version == "v1"
    assert actions == []  # written, not yet read by any worker
    model, actions = feed(model, [(203.0, m.Workers((95.0, 202.0)))])
    assert model.config_version == "v1"  # half replaced: one worker still serves v1
    model, actions = feed(model, [(206.0, m.Workers((202.0, 205.0)))])
    assert model.config_version == "v2"
    assert [type(a).__name__ for a in actions] == ["Write"]
    assert model.state is State.RUNNING
    assert model.pid == 10


def test_a_rolling_replacement_is_no_crash():
    model = loaded()
    model, actions = feed(model, [(200.0, m.ConfigSeen("v2", 199.0)), (201.0, m.Workers((95.0, 96.0, 200.5))),
                                  (201.5, m.Probe(ok=True, started_at=201.2, own=True)), (203.0, m.Workers((200.5, 96.0))),
                                  (204.0, m.Workers((200.5, 96.0, 203.5))), (206.0, m.Workers((200.5, 203.5)))])
    assert model.state is State.RUNNING
    assert model.config_version == "v2"
    assert not any(isinstance(a, (m.KillHung, m.CaptureLogTail, m.Reap, m.StopProgram)) for a in actions)


def test_one_process_mode_keeps_the_version_it_started_with():
    model = loaded()
    model = replace(model, workers=())
    model, _ = feed(model, [(200.0, m.ConfigSeen("v2", 199.0)), (201.0, m.Workers(()))])
    assert model.config_version == "v1"


def test_workers_respawned_before_the_change_do_not_move_the_version():
    model = loaded()
    model, _ = feed(model, [(150.0, m.Workers((95.0, 149.0))), (200.0, m.ConfigSeen("v2", 199.0))])
    assert model.config_version == "v1"


def test_a_sidecar_that_accepts_connections_is_serving_however_late_its_health_answers():
    # overload: health answers later than the window, but the tree keeps accepting connections
    timeline = [(t, m.Probe(ok=False, started_at=t - 20, detail="no complete answer within 20 s"))
                for t in range(121, 200)]
    timeline += [(t + 0.5, m.TreeSigns(stopped=False, cpu=float(t), accepted=True)) for t in range(101, 200)]
    timeline += [(t + 0.6, m.Tick()) for t in range(101, 200)]
    model, actions = feed(running(), timeline)
    assert model.state is State.RUNNING
    assert not any(isinstance(a, m.KillHung) for a in actions)
    # then it accepts nothing more: hung a window after the last accepted connection
    model, actions = feed(model, [(t, m.TreeSigns(stopped=False, cpu=300.0 + t, accepted=False))
                                  for t in range(201, 219)] + [(219.0, m.Probe(False, 199.5, detail="x"))])
    assert model.state is State.RUNNING
    model, actions = feed(model, [(220.0, m.Tick())])
    assert model.state is State.CRASHED
    assert model.halted == "hung"
