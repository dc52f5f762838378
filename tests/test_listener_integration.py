"""The listener against a real supervisord and the stand-in LiteLLM (forked workers)."""

import os
import signal
import time

import psutil
import pytest

from harness import poll

pytestmark = pytest.mark.integration


def test_starting_then_running_and_state_file_contract(make_sidecar):
    sc = make_sidecar(mode={"start_delay": 1.5})
    sc.start_supervisord(wait_state=None)
    st = sc.wait_state("starting", 15)
    assert st.pid in (None, sc.info()["pid"])
    st = sc.wait_state("running", 20)
    info = sc.info()
    assert st.pid == info["pid"] and st.supervisor_state == "RUNNING" and st.port == sc.port
    assert st.health.ok is True and st.health.latency_ms is not None
    assert st.listener_pid == sc.listener_info()["pid"]
    assert st.error is None and st.log_tail == ()
    assert oct(os.stat(sc.state_file).st_mode & 0o777) == "0o644"
    states = [e["state"] for e in sc.history()]
    assert states[-2:] == ["starting", "running"]
    # the heartbeat keeps moving while nothing happens
    first = st.heartbeat_at
    poll(lambda: sc.state().heartbeat_at > first, 6, what="a newer heartbeat")


def test_sigkill_parent_with_two_workers_reaps_orphans_and_comes_back(make_sidecar):
    sc = make_sidecar(workers=2)
    sc.start_supervisord()
    st = sc.wait_state("running", 20)
    parent = psutil.Process(st.pid)
    poll(lambda: len(parent.children()) == 2, 10, what="two workers")
    workers = parent.children()
    os.kill(parent.pid, signal.SIGKILL)
    crashed = sc.wait_state("crashed", 5, pred=lambda s: s.pid is None or s.pid != st.pid)
    assert "exited unexpectedly" in crashed.error
    psutil.wait_procs(workers, timeout=5)
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
    again = sc.wait_state("running", 20, pred=lambda s: s.pid not in (None, st.pid))
    assert again.pid != st.pid
    # exactly the new tree holds the port
    tree = {again.pid} | {p.pid for p in psutil.Process(again.pid).children(recursive=True)}
    assert set(sc.port_listeners()) <= tree
    states = [e["state"] for e in sc.history()]
    assert "crashed" in states and states[-1] == "running"


def test_clean_stop_leaves_nothing_and_frees_the_port(make_sidecar):
    sc = make_sidecar(workers=2, mode={"setsid_worker": True})
    sc.start_supervisord()
    st = sc.wait_state("running", 20)
    res = sc.ctl("stop", "agentroute-sidecar")
    assert res.returncode == 0, res.stdout + res.stderr
    sc.wait_state("stopped", 10, pred=lambda s: s.supervisor_state == "STOPPED")
    assert sc.marked() == []
    assert sc.port_listeners() == []
    assert not sc.health_ok()

