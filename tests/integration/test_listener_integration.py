"""The listener against a real supervisord and the stand-in LiteLLM (forked workers)."""

import os
import signal
import time

import psutil
import pytest

from harness import lives, poll

pytestmark = pytest.mark.integration


def test_starting_then_running_and_state_file_contract(make_sidecar):
    sc = make_sidecar(mode={"start_delay": 1.5})
    sc.start_supervisord(wait_state=None)
    st = sc.wait_state("starting", 15)
    assert st.pid in (None, sc.info()["pid"])
    st = sc.wait_state("running", 20)
    info = sc.info()
    assert st.pid == info["pid"]
    assert st.supervisor_state == "RUNNING"
    assert st.port == sc.port
    assert st.health.ok is True
    assert st.health.latency_ms is not None
    assert st.listener_pid == sc.listener_info()["pid"]
    assert st.error is None
    assert st.log_tail == ()
    assert oct(os.stat(sc.state_file).st_mode & 0o777) == "0o644"
    states = sc.states_until("running")  # the history has it: its line is written before the state file
    assert states[-2:] == ["starting", "running"]
    # the heartbeat keeps moving while nothing happens
    first = st.heartbeat_at
    poll(lambda: sc.state().heartbeat_at > first, 6, what="a newer heartbeat")


@pytest.mark.oldest  # tests/integration/test_oldest.py says why
def test_sigkill_parent_with_two_workers_reaps_orphans_and_comes_back(make_sidecar):
    sc = make_sidecar(workers=2)
    sc.start_supervisord()
    st = sc.wait_state("running", 20)
    parent = psutil.Process(st.pid)
    poll(lambda: len(parent.children()) == 2, 10, what="two workers")
    # healthy can come before supervisord's startsecs are over; a kill then is a failed start (BACKOFF)
    poll(lambda: sc.info()["statename"] == "RUNNING", 10, what="supervisord's RUNNING")
    workers = parent.children()
    os.kill(parent.pid, signal.SIGKILL)
    crashed = sc.wait_state("crashed", 5, pred=lambda s: s.pid is None or s.pid != st.pid)
    assert "exited unexpectedly" in crashed.error
    psutil.wait_procs(workers, timeout=5)
    assert not any(lives(w) for w in workers)
    again = sc.wait_state("running", 20, pred=lambda s: s.pid not in (None, st.pid))
    assert again.pid != st.pid
    # exactly the new tree holds the port
    tree = {again.pid} | {p.pid for p in psutil.Process(again.pid).children(recursive=True)}
    assert set(sc.port_listeners()) <= tree
    states = sc.states_until("running")
    assert "crashed" in states


def test_clean_stop_leaves_nothing_and_frees_the_port(make_sidecar):
    sc = make_sidecar(workers=2, mode={"setsid_worker": True})
    sc.start_supervisord()
    sc.wait_state("running", 20)
    res = sc.ctl("stop", "agentroute-sidecar")
    assert res.returncode == 0, res.stdout + res.stderr
    sc.wait_state("stopped", 10, pred=lambda s: s.supervisor_state == "STOPPED")
    assert sc.marked() == []
    assert sc.port_listeners() == []
    assert not sc.health_ok()



def test_never_healthy_is_stopped_and_crashed_with_log_tail(make_sidecar):
    sc = make_sidecar(mode={"never_healthy": True}, render_args=["--health-timeout", "2"])
    sc.start_supervisord(wait_state=None)
    st = sc.wait_state("crashed", 15)
    assert st.error == "did not become healthy within 2 s"
    assert any("listening on" in line for line in st.log_tail)
    poll(lambda: sc.info()["statename"] == "STOPPED", 15, what="supervisord STOPPED")
    st = sc.wait_state("crashed", 5, pred=lambda s: s.supervisor_state == "STOPPED")
    assert st.error == "did not become healthy within 2 s"
    assert sc.marked() == []
    assert sc.port_listeners() == []


def test_exit_at_start_is_crashed_with_the_log_tail(make_sidecar):
    sc = make_sidecar(mode={"exit_at_start": True})
    sc.start_supervisord(wait_state=None)
    st = sc.wait_state("crashed", 15)
    assert st.error
    # whichever came first, the exit or the listener's start ("found EXITED when the listener started")
    assert any(word in st.error.lower() for word in ("backoff", "fatal", "exited")), st.error
    poll(lambda: any("fatal startup error" in line for line in (sc.state().log_tail or ())), 15,
         what="the startup error in log_tail")
    poll(lambda: sc.info()["statename"] == "FATAL", 20, what="FATAL")
    st = sc.wait_state("crashed", 5, pred=lambda s: s.supervisor_state == "FATAL")
    assert "FATAL" in st.error or "BACKOFF" in st.error


def test_hung_sidecar_is_crashed_killed_and_restarted(make_sidecar):
    sc = make_sidecar(workers=2, mode={"hang_after": 1.0})
    sc.start_supervisord()
    st = sc.wait_state("running", 20)
    sc.set_mode({})  # the restarted one behaves
    crashed = sc.wait_state("crashed", 40)  # the hang window (20 s) after the hang
    assert "stopped answering health checks" in crashed.error
    again = sc.wait_state("running", 20, pred=lambda s: s.pid not in (None, st.pid))
    assert again.pid != st.pid
    tree = {again.pid} | {p.pid for p in psutil.Process(again.pid).children(recursive=True)}
    assert {p.pid for p in sc.marked()} == tree


@pytest.mark.oldest  # tests/integration/test_oldest.py says why
def test_sigstop_hang_is_detected_and_restarted_without_waiting_out_stop_timeout(make_sidecar):
    sc = make_sidecar(render_args=["--stop-timeout", "60"])
    sc.start_supervisord()
    st = sc.wait_state("running", 20)
    t0 = time.monotonic()
    os.kill(st.pid, signal.SIGSTOP)
    try:
        sc.wait_state("crashed", 15)
        again = sc.wait_state("running", 30, pred=lambda s: s.pid not in (None, st.pid))
    finally:
        try:
            os.kill(st.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    assert again.pid != st.pid
    assert time.monotonic() - t0 < 60  # the 60 s stop timeout was not waited out


def test_listener_sigkill_does_not_flap_the_state(make_sidecar):
    sc = make_sidecar(workers=2)
    sc.start_supervisord()
    st = sc.wait_state("running", 20)
    old_listener = sc.listener_info()["pid"]
    os.kill(old_listener, signal.SIGKILL)
    poll(lambda: sc.state().listener_pid not in (old_listener,), 20, what="a new listener writing")
    new = sc.state()
    assert new.state.value == "running"
    assert new.since == st.since
    assert new.pid == st.pid
    entries = [e for e in sc.history() if e.get("listener_pid") != old_listener]
    assert all(e["state"] == "running" for e in entries)
    # the new listener still does the job: it sees the next crash and reaps
    parent = psutil.Process(st.pid)
    workers = parent.children()
    os.kill(st.pid, signal.SIGKILL)
    sc.wait_state("running", 20, pred=lambda s: s.pid not in (None, st.pid))
    psutil.wait_procs(workers, timeout=5)
    assert not any(lives(w) for w in workers)


def test_flood_of_other_programs_events_is_acknowledged_and_crash_still_seen(make_sidecar, tmp_path):
    # a second program that flaps as fast as supervisord allows: a storm of PROCESS_STATE events
    sc = make_sidecar()
    with open(sc.conf, "a") as fh:
        fh.write("\n[program:flapper]\ncommand=/bin/true\nstartsecs=0\nautorestart=true\n"
                 "startretries=1000000\nstdout_logfile=NONE\n")
    sc.start_supervisord()
    st = sc.wait_state("running", 20)
    flap_start = time.monotonic()
    poll(lambda: time.monotonic() - flap_start > 3, 5, interval=0.5, what="3 s of flapping")
    os.kill(st.pid, signal.SIGKILL)
    sc.wait_state("crashed", 5, pred=lambda s: s.pid != st.pid)
    sc.wait_state("running", 20, pred=lambda s: s.pid not in (None, st.pid))
    listener = sc.listener_info()
    assert listener["statename"] == "RUNNING"
    log = open(os.path.join(sc.dir, "supervisord.log")).read()
    assert "event buffer overflowed" not in log


def test_probes_ignore_a_dead_http_proxy(make_sidecar):
    dead = "http://127.0.0.1:9"  # discard port: nothing listens
    sc = make_sidecar(env={"HTTP_PROXY": dead, "http_proxy": dead, "NO_PROXY": "", "no_proxy": ""})
    sc.start_supervisord()
    assert sc.wait_state("running", 20).health.ok is True
