"""Recovery without a person, against a real supervisord and the stand-in (issue 15).

A slow first boot and a FATAL sidecar come back by themselves; an operator's
stop stays stopped; a foreign health server on the port is never ``running``;
a listener started before its state folder exists watches the sidecar. Small
health timeouts and retry delays keep them short; what is timed is asserted
only as "it happened", never how fast.
"""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from harness import poll, run_cli
from sidecar_plugin.client import Sidecar
from sidecar_plugin.errors import SidecarError

pytestmark = pytest.mark.integration

# fast retries for the tests: 1 s doubling to 2 s
FAST_RETRY = ["--retry-delay", "1", "--retry-max-delay", "2"]


def cli(sc, *args):
    return run_cli(*args, "--state-file", sc.state_file, "-s", "unix://" + sc.sock)



def test_a_slow_first_boot_reaches_running_without_a_person(make_sidecar, tmp_path):
    metrics = str(tmp_path / "m.prom")
    sc = make_sidecar(mode={"start_delay": 4, "slow_starts": 1},
                      render_args=["--health-timeout", "1.5", "--metrics-file", metrics] + FAST_RETRY)
    sc.start_supervisord(wait_state=None)
    crashed = sc.wait_state("crashed", 20, pred=lambda s: (s.raw.get("retry") or {}).get("next_at"))
    assert crashed.error == "did not become healthy within 1.5 s"
    retry = crashed.raw["retry"]
    assert retry["attempt"] == 1
    assert retry["delay"] == 1
    assert retry["next_at"] >= crashed.since
    # every door shows the retry while it is scheduled (it may already be under way: then attempt only)
    doc = sc.rpc().sidecar.getState(sc.program)
    assert doc["retry"]["attempt"] >= 1
    # ... and the sidecar comes back by itself: the second start is fast
    running = sc.wait_state("running", 30)
    assert running.pid == sc.info()["pid"]
    assert running.raw["retry"]["attempt"] >= 1
    assert not running.raw["retry"].get("next_at")
    states = sc.states_until("running")  # the history has it: its line is written before the state file
    assert "crashed" in states
    text = open(metrics).read()
    assert f'agentroute_sidecar_retry_attempt{{program="{sc.program}"}}' in text
    assert f'agentroute_sidecar_next_retry_timestamp_seconds{{program="{sc.program}"}} 0.0' in text


def test_a_fatal_sidecar_comes_back_once_its_fault_is_gone(make_sidecar):
    sc = make_sidecar(mode={"fail_starts": 1000}, render_args=FAST_RETRY)
    sc.start_supervisord(wait_state=None)
    # a waiter started now keeps waiting while a retry is scheduled, and sees it running
    waiter = subprocess.Popen([sys.executable, "-m", "sidecar_plugin", "wait", "--state", "running",
                               "--timeout", "90", "--state-file", sc.state_file, "-s", "unix://" + sc.sock],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        poll(lambda: sc.info()["statename"] == "FATAL", 30, what="FATAL")
        st = sc.wait_state("crashed", 10, pred=lambda s: s.supervisor_state == "FATAL"
                           and (s.raw.get("retry") or {}).get("next_at"))
        assert "FATAL" in st.error
        res = cli(sc, "status")
        assert res.returncode == 3, res.stdout
        assert "retry: attempt" in res.stdout, res.stdout
        res = sc.ctl("sidecar", "status")
        assert "retry: attempt" in res.stdout, res.stdout
        # the listener keeps trying: a later retry than the first
        poll(lambda: (sc.state().raw.get("retry") or {}).get("attempt", 0) >= 2, 30, what="a second retry")
        assert waiter.poll() is None, "wait gave up although a retry was scheduled"
        sc.set_mode({})  # the fault is gone
        st = sc.wait_state("running", 30)
        assert st.pid == sc.info()["pid"]
        out, err = waiter.communicate(timeout=30)
        assert waiter.returncode == 0, err
    finally:
        if waiter.poll() is None:
            os.killpg(waiter.pid, signal.SIGKILL)
            waiter.wait(10)


def still(check, seconds, what):
    """Assert ``check()`` holds at every look for ``seconds`` (observing a window, not waiting for an event)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert check(), what
        time.sleep(0.1)


def test_an_operators_stop_during_the_retry_wait_stays_stopped(make_sidecar):
    sc = make_sidecar(mode={"fail_starts": 1000}, render_args=["--retry-delay", "2", "--retry-max-delay", "2"])
    sc.start_supervisord(wait_state=None)
    sc.wait_state("crashed", 30, pred=lambda s: s.supervisor_state == "FATAL"
                  and (s.raw.get("retry") or {}).get("next_at"))
    sc.set_mode({})  # it would start fine now: only the operator's stop keeps it down
    waiter = subprocess.Popen([sys.executable, "-m", "sidecar_plugin", "wait", "--state", "running",
                               "--timeout", "60", "--state-file", sc.state_file, "-s", "unix://" + sc.sock],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert "waiting for" in waiter.stderr.readline()  # its first look: the wait has begun
        res = cli(sc, "stop", "--timeout", "20")
        assert res.returncode == 0, res.stderr
        # the waiter gives up at once: nothing will bring it back now
        out, err = waiter.communicate(timeout=30)
        assert waiter.returncode == 1, err
        assert "stopped on purpose" in err, err
    finally:
        if waiter.poll() is None:
            os.killpg(waiter.pid, signal.SIGKILL)
            waiter.wait(10)
    st = sc.state()
    assert st.state.value == "stopped"
    assert st.raw["retry"] == {"attempt": 0, "next_at": None, "delay": None}
    # two retry delays: a retry would have started it by now
    still(lambda: sc.state().state.value == "stopped" and sc.info()["statename"] in ("FATAL", "STOPPED"), 4,
          "an operator's stop was undone")
    assert sc.marked() == []


def test_an_operators_stop_of_a_running_sidecar_stays_stopped(make_sidecar):
    sc = make_sidecar(render_args=FAST_RETRY)
    sc.start_supervisord()
    sc.wait_state("running", 20)
    res = sc.ctl("stop", sc.program)
    assert res.returncode == 0, res.stdout + res.stderr
    sc.wait_state("stopped", 10, pred=lambda s: s.supervisor_state == "STOPPED")
    still(lambda: sc.state().state.value == "stopped" and sc.info()["statename"] == "STOPPED", 5,
          "an operator's stop was undone")


def test_a_stop_after_a_health_timeout_is_the_listeners_own_and_is_retried(make_sidecar):
    sc = make_sidecar(mode={"never_healthy": True}, render_args=["--health-timeout", "1"] + FAST_RETRY)
    sc.start_supervisord(wait_state=None)
    st = sc.wait_state("crashed", 20, pred=lambda s: s.supervisor_state == "STOPPED")
    assert st.error.startswith("did not become healthy within 1 s")
    # the listener starts it again itself (a new pid), never leaving it stopped
    first = [e.get("pid") for e in sc.history() if e["state"] == "starting"]
    poll(lambda: len([e for e in sc.history() if e["state"] == "starting"]) > len(first), 20,
         what="a retry started by the listener")


HEALTH_SERVER = """
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
s = HTTPServer(("127.0.0.1", int(sys.argv[1])), H)
print("up", flush=True)
s.serve_forever()
"""


def test_a_foreign_health_server_on_the_port_is_never_running(make_sidecar):
    sc = make_sidecar(render_args=["--health-timeout", "2"] + FAST_RETRY)
    foreign = subprocess.Popen([sys.executable, "-c", HEALTH_SERVER, str(sc.port)], stdout=subprocess.PIPE,
                               start_new_session=True)
    try:
        assert foreign.stdout.readline().strip() == b"up"
        assert sc.health_ok()  # it does answer /health/liveliness
        sc.start_supervisord(wait_state=None)
        seen = set()

        def not_running_and_named():
            st = sc.state()
            if st is not None:
                seen.add(st.state.value)
                assert st.state.value != "running", f"a foreign server read as running: {st.raw}"
                return f"pid {foreign.pid}" in (st.raw.get("port_holder") or "") and \
                    (st.raw.get("retry") or {}).get("attempt", 0) >= 1
            return False

        poll(not_running_and_named, 40, interval=0.05, what="the holder named, and a retry")
        st = sc.state()
        assert st.state.value in ("crashed", "starting")
        assert f"pid {foreign.pid}" in st.raw["port_holder"]
        assert foreign.poll() is None  # never touched
        res = cli(sc, "status")
        assert res.returncode == 3, res.stdout
        assert f"port held by: pid {foreign.pid}" in res.stdout, res.stdout
    finally:
        os.killpg(foreign.pid, signal.SIGKILL)
        foreign.wait(10)
    # the port is free again: the sidecar comes back by itself and is its own holder
    st = sc.wait_state("running", 30)
    assert st.raw.get("port_holder") is None
    assert st.pid == sc.info()["pid"]


def test_a_listener_started_before_its_folder_exists_watches_the_sidecar(make_sidecar, tmp_path):
    run_dir = tmp_path / "run" / "agentroute"
    state_file = str(run_dir / "state.json")
    run_dir.mkdir(parents=True)  # render checks the folder exists (everything is checked before writing)
    sc = make_sidecar(render_args=["--state-file", state_file])
    shutil.rmtree(str(tmp_path / "run"), ignore_errors=True)  # /run emptied at boot
    sc.state_file = state_file
    sc.start_supervisord(wait_state=None)
    st = sc.wait_state("running", 30)
    assert st.pid == sc.info()["pid"]
    assert sc.listener_info()["statename"] == "RUNNING"
    log = open(os.path.join(sc.out, "listener.log")).read()
    assert "did not exist: created it" in log


def test_start_ends_with_a_clear_error_when_the_state_file_stays_missing(make_sidecar, tmp_path):
    sc = make_sidecar()
    sc.start_supervisord()
    sc.wait_state("running", 20)
    missing = str(tmp_path / "nowhere" / "state.json")
    c = Sidecar(state_file=missing, program=sc.program, server_url="unix://" + sc.sock, stale_after=1.0)
    with pytest.raises(SidecarError) as failed:
        c.start()
    assert "no state file" in str(failed.value)
    assert missing in str(failed.value)
