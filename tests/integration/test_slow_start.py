"""Slow is not failed (issue 22), against a real supervisord and the stand-in, with the shipped defaults.

On a host busy with other work LiteLLM needs a minute to start; the listener
used to stop every start at 20 s and retry into the same wall. Here the
stand-in's start burns CPU beside CPU hogs for longer than that old limit and
must come up on its first start, while a start that stops making progress, a
start whose port another process holds, and a failed start whose listener is
restarted mid-stop are all still ``crashed`` fast and retried.
"""

import os
import socket

import pytest

from harness import poll

pytestmark = pytest.mark.integration

def starts(sc):
    with open(os.path.join(sc.out, "fake_starts")) as fh:
        return int(fh.read())


def test_a_start_slower_than_the_old_limit_on_a_busy_host_comes_up_on_its_first_try(make_sidecar, cpu_hogs):
    sc = make_sidecar(mode={"start_burn": 26})  # the defaults: no --health-timeout given
    sc.start_supervisord(wait_state=None)
    st = sc.wait_state("running", 150)
    assert st.since - min(e["at"] for e in sc.history()) > 20  # the old limit, which stopped every such start
    assert sc.states_until("running") == ["starting", "running"], sc.history()
    assert starts(sc) == 1
    assert cpu_hogs.busy(), "the host was not busy for the whole start"


def test_a_start_that_stops_making_progress_is_crashed_within_the_hang_window(make_sidecar):
    sc = make_sidecar(mode={"start_burn": 2, "start_stall": True})
    sc.start_supervisord(wait_state=None)
    st = sc.wait_state("crashed", 90)
    assert "made no progress while starting" in st.error, st.error
    first = min(e["at"] for e in sc.history())
    assert st.since - first < 60  # the hang window (20 s) after its last progress, not the 300 s bound
    assert (st.raw.get("retry") or {}).get("next_at"), "no retry scheduled"


def test_a_start_stuck_once_its_workers_are_forked_is_crashed_within_the_hang_window(make_sidecar):
    sc = make_sidecar(workers=2, mode={"worker_start_delay": 1000})  # the workers never get ready
    sc.start_supervisord(wait_state=None)
    st = sc.wait_state("crashed", 90)
    assert "made no progress while starting" in st.error, st.error


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "::1"])
def test_a_start_whose_port_another_process_holds_is_crashed_naming_it(make_sidecar, host):
    # 127.0.0.1 and 0.0.0.0: [fcgi-program], supervisord cannot listen and the launcher exits saying so;
    # ::1: [program] (supervisord's sockets are IPv4 only), the stand-in serves elsewhere as LiteLLM's CLI
    # does on port 4000 and would never answer: the listener fails the start on the holder alone
    sc = make_sidecar(mode={"elsewhere_if_busy": True}, render_args=["--host", host])
    squatter = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("::1" if ":" in host else "127.0.0.1", sc.port))
    squatter.listen(8)
    me = f"pid {os.getpid()}"
    try:
        sc.start_supervisord(wait_state=None)
        st = sc.wait_state("crashed", 60, pred=lambda s: me in (s.error or ""))
        assert "held by" in st.error, st.error
        assert "nobody" not in st.error, st.error
        assert st.error.count(me) == 1, st.error
        assert (st.raw.get("port_holder") or "").startswith(me)
    finally:
        squatter.close()


def test_a_listener_restarted_while_it_stops_a_failed_start_keeps_it_crashed_and_retries(make_sidecar):
    # apply (or anyone) restarts the listener while supervisord still stops a start the listener gave up on
    sc = make_sidecar(mode={"start_stall": True, "stop_delay": 12},
                      render_args=["--hang-window", "2", "--retry-delay", "1", "--retry-max-delay", "2"])
    sc.start_supervisord(wait_state=None)
    poll(lambda: sc.info()["statename"] == "STOPPING", 60, what="the listener to stop the stalled start")
    first = sc.state()
    assert first.state.value == "crashed"
    assert "made no progress" in first.error
    name = f"{sc.program}-health"
    sc.rpc().supervisor.stopProcess(f"{name}:{name}", True)
    sc.rpc().supervisor.startProcess(f"{name}:{name}", True)
    assert sc.info()["statename"] == "STOPPING", "the stop ended before the new listener started: no race"
    new = sc.wait_state("crashed", 30, pred=lambda s: s.listener_pid != first.listener_pid)
    assert new.error == first.error
    assert (new.raw.get("retry") or {}).get("attempt", 0) >= 1
    poll(lambda: starts(sc) >= 2, 60, what="the listener's retry to start it again")
    assert "stopped" not in [e["state"] for e in sc.history()], sc.history()
