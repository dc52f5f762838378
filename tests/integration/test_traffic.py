"""Supervision the gateway's requests never notice: lifecycle actions with requests in flight (stand-in LiteLLM).

Each test counts what a gateway would see: refused connections, failed
requests, cut streams. Timing goals (detection within 5 s or 30 s, a 60 s
drain) live in the benchmark; here only outcomes are asserted.
"""

import time

import psutil
import pytest

from sidecar_plugin.shell.processes.procs import connections_of

from harness import MASTER_KEY, PROFILE, poll, run_cli, write
from traffic import Traffic, one_request

pytestmark = pytest.mark.integration

FAST = "agentroute-fast"


def established(pid):
    """Whether a worker of ``pid`` holds an open client connection (a request in flight)."""
    return any(c.status == psutil.CONN_ESTABLISHED for w in psutil.Process(pid).children()
               for c in connections_of(w))



def test_apply_under_traffic_refuses_and_cuts_nothing(make_sidecar):
    sc = make_sidecar(workers=2)
    sc.start_supervisord()
    first = sc.wait_state("running", 20)
    traffic = Traffic(sc.port, MASTER_KEY, FAST, rate=10, streams=(1, 3, 6)).start()
    poll(lambda: traffic.short["ok"] >= 3, 10, what="traffic flowing")
    write(sc.profile, PROFILE + "  balanced: x/y\n")
    res = sc.apply()
    assert res.returncode == 0, res.stdout + res.stderr
    served_new = one_request(sc.port, MASTER_KEY, "agentroute-balanced")
    traffic.stop()
    assert traffic.lost == 0, traffic.summary()
    assert traffic.short["ok"] > 10, traffic.summary()
    assert set(traffic.stream_outcomes.values()) == {"ok"}, traffic.summary()
    assert served_new == "ok"
    st = sc.state()
    assert st.pid == first.pid
    assert st.since == first.since  # no restart, no state change
    assert all(h["state"] != "crashed" for h in sc.history())


@pytest.mark.parametrize("how", ["cli", "ctl", "supervisorctl"])
def test_stop_drains_in_flight_streams(make_sidecar, how):
    sc = make_sidecar(workers=2, render_args=["--stop-timeout", "30"])
    sc.start_supervisord()
    st = sc.wait_state("running", 20)
    traffic = Traffic(sc.port, MASTER_KEY, FAST, rate=0, streams=(4,)).start()
    poll(lambda: established(st.pid) or traffic.stream_outcomes,
         10, what="the stream in flight")
    t0 = time.monotonic()
    if how == "cli":
        res = run_cli("stop", "--state-file", sc.state_file, "-s", "unix://" + sc.sock, timeout=120)
    elif how == "ctl":
        res = sc.ctl("sidecar", "stop", timeout=120)
    else:
        res = sc.ctl("stop", sc.program, timeout=120)
    took = time.monotonic() - t0
    traffic.stop()
    assert res.returncode == 0, res.stdout + res.stderr
    assert traffic.stream_outcomes == {4: "ok"}, traffic.summary()  # drained, not cut
    assert took < 30  # it ended when the stream did, not at the end of the drain window
    assert sc.port_listeners() == []
    assert sc.supervisord_listens()  # stopped: nothing of LiteLLM listens; connections wait
    poll(lambda: sc.state().state.value == "stopped", 10, what="stopped")
    assert not sc.marked()


def test_sidecar_stop_from_python_drains(make_sidecar):
    from sidecar_plugin.client import Sidecar

    sc = make_sidecar(workers=2, render_args=["--stop-timeout", "30"])
    sc.start_supervisord()
    sc.wait_state("running", 20)
    traffic = Traffic(sc.port, MASTER_KEY, FAST, rate=0, streams=(3,)).start()
    poll(lambda: sc.marked() and established(sc.state().pid), 10,
         what="the stream in flight")
    Sidecar(state_file=sc.state_file, program=sc.program, server_url="unix://" + sc.sock).stop()
    traffic.stop()
    assert traffic.stream_outcomes == {3: "ok"}, traffic.summary()
    assert not sc.marked()


# a worker's SIGKILL under traffic: tests/integration/test_port.py


# ---- hung is not busy -------------------------------------------------------------------

def test_slow_but_answering_sidecar_is_never_killed(make_sidecar):
    # every health answer takes 2.5 s: more than the old 1 s probe timeout, less than the hang window (6 s),
    # watched for twice that window: a sidecar taken for hung would have been killed within it
    window = 6.0
    sc = make_sidecar(mode={"slow_health": 2.5}, render_args=["--hang-window", f"{window:g}"])
    sc.start_supervisord(wait_state=None)
    st = sc.wait_state("running", 30)
    deadline = time.monotonic() + 2 * window
    while time.monotonic() < deadline:  # the observation window itself is the assertion
        now = sc.state()
        assert now.state.value == "running", now.error
        assert now.pid == st.pid, now.error
        time.sleep(0.5)
    assert all(h["state"] != "crashed" for h in sc.history())


@pytest.mark.parametrize("mode", ["health_trickle_after", "health_endless_after"])
def test_a_health_answer_that_never_completes_is_a_hang(make_sidecar, mode):
    # trickling one byte every 0.5 s, or a 200 whose body never ends: no answer, hence hung
    sc = make_sidecar(mode={mode: 2.0}, render_args=["--hang-window", "6"])
    sc.start_supervisord()
    st = sc.wait_state("running", 20)
    sc.set_mode({})  # the restarted one behaves
    listener = psutil.Process(sc.listener_info()["pid"])
    crashed = sc.wait_state("crashed", 30)
    assert "stopped answering health checks" in crashed.error
    assert listener.memory_info().rss < 150 * 1024 * 1024  # the byte cap: no endless body in memory
    again = sc.wait_state("running", 30, pred=lambda s: s.pid not in (None, st.pid))
    assert again.pid != st.pid
