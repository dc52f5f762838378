"""The port never closes: no supervision event refuses a connection (issue 23), with the stand-in LiteLLM.

supervisord owns the sidecar's listening socket (``[fcgi-program]``) and the
``sidecar`` rpcinterface holds it open, so while LiteLLM's processes die,
restart or are replaced, connections wait in the kernel's queue (or are served
by orphans that drain) instead of being refused. Each test runs one event under
traffic (short requests at 10/s and a stream) and counts what a gateway that
never retries would see: refused, failed, cut, and the longest wait.
"""

import json
import os
import signal
import socket
import time

import psutil
import pytest

from harness import MASTER_KEY, lives, poll, run_cli
from traffic import Traffic

pytestmark = pytest.mark.integration

FAST = "agentroute-fast"


def row(event, traffic):
    """One line of the table docs/how-it-works.md gives ("The port never closes"; run with -s to see them)."""
    cut = sum(1 for o in traffic.stream_outcomes.values() if o == "cut")
    print(f"\nROW | {event} | refused {traffic.short['refused']} | failed {traffic.short['failed']} | "
          f"cut {cut} | longest wait {traffic.longest:.2f} s | ok {traffic.short['ok']}")


def assert_nothing_lost(traffic, event):
    row(event, traffic)
    assert traffic.short["refused"] == 0, traffic.summary()
    assert traffic.short["failed"] == 0, traffic.summary()
    assert traffic.short["pending"] == 0, traffic.summary()  # unanswered when the traffic stopped
    assert traffic.short["ok"] > 10, traffic.summary()


def running(sc, timeout=30, other_than=None):
    return sc.wait_state("running", timeout, pred=lambda s: s.pid is not None and s.pid != other_than)


def under_traffic(sc, streams=(3,)):
    traffic = Traffic(sc.port, MASTER_KEY, FAST, rate=10, streams=streams).start()
    poll(lambda: traffic.short["ok"] >= 5, 15, what="traffic flowing")
    return traffic


def started(sc, workers=2):
    sc.start_supervisord()
    st = running(sc)
    poll(lambda: len(psutil.Process(st.pid).children()) == workers, 10, what=f"{workers} workers")
    return st


def test_render_gives_supervisord_the_socket(make_sidecar):
    sc = make_sidecar(workers=2)
    with open(os.path.join(sc.out, "sidecar.conf")) as fh:
        conf = fh.read()
    assert f"[fcgi-program:{sc.program}]" in conf
    assert f"socket=tcp://127.0.0.1:{sc.port}" in conf
    assert "--port-owner supervisord" in conf
    st = started(sc)
    assert sc.supervisord_listens()
    assert set(sc.port_listeners()) <= {st.pid} | {c.pid for c in psutil.Process(st.pid).children()}
    with open(sc.state_file) as fh:
        assert json.load(fh)["port_owner"] == "supervisord"


@pytest.mark.oldest  # tests/integration/test_oldest.py says why
def test_sigkill_of_the_main_process_refuses_nothing_and_orphans_drain(make_sidecar):
    sc = make_sidecar(workers=2)
    st = started(sc)
    orphans = psutil.Process(st.pid).children()
    traffic = under_traffic(sc, streams=(4,))
    os.kill(st.pid, signal.SIGKILL)
    again = running(sc, other_than=st.pid)
    # the orphans served until the replacement did; then they drain (SIGTERM) and go
    poll(lambda: not any(lives(p) for p in orphans), 30,
         what="the orphans drained")
    poll(lambda: traffic.short["ok"] >= 40, 20, what="more answers")
    traffic.stop()
    assert_nothing_lost(traffic, "SIGKILL of the main process")
    assert traffic.stream_outcomes == {4: "ok"}, traffic.summary()  # the orphan finished its stream
    assert again.pid != st.pid


def test_sigkill_of_a_worker_refuses_nothing(make_sidecar):
    sc = make_sidecar(workers=2)
    st = started(sc)
    traffic = under_traffic(sc, streams=())
    victim = psutil.Process(st.pid).children()[0]
    victim.kill()
    poll(lambda: len([c for c in psutil.Process(st.pid).children() if c.pid != victim.pid and lives(c)]) == 2, 10,
         what="a respawned worker")
    poll(lambda: traffic.short["ok"] >= 40, 20, what="more answers")
    traffic.stop()
    assert_nothing_lost(traffic, "SIGKILL of a worker")


def test_supervisorctl_restart_refuses_nothing(make_sidecar):
    sc = make_sidecar(workers=2, mode={"start_delay": 2})
    st = started(sc)
    traffic = under_traffic(sc)
    res = sc.ctl("restart", sc.program, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    running(sc, other_than=st.pid)
    poll(lambda: traffic.short["ok"] >= 60, 20, what="more answers")
    traffic.stop()
    assert_nothing_lost(traffic, "supervisorctl restart")
    assert traffic.stream_outcomes == {3: "ok"}, traffic.summary()  # drained by the stop
    assert traffic.longest >= 1.0  # requests did wait for the start (2 s), in the queue


def test_stop_then_start_refuses_nothing(make_sidecar):
    sc = make_sidecar(workers=2)
    st = started(sc)
    traffic = under_traffic(sc)
    res = run_cli("stop", "--state-file", sc.state_file, "-s", "unix://" + sc.sock, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "stopped (no process left; supervisord keeps the port: new connections wait" in res.stdout, res.stdout
    assert sc.port_listeners() == []
    assert not sc.marked()  # nothing of LiteLLM left...
    assert sc.supervisord_listens()  # ...but the port still accepts: connections wait
    with socket.create_connection(("127.0.0.1", sc.port), timeout=5):
        pass
    time.sleep(1.0)  # the stopped window the traffic runs through (not a synchronisation)
    res = run_cli("start", "--state-file", sc.state_file, "-s", "unix://" + sc.sock, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    poll(lambda: traffic.short["ok"] >= 60, 20, what="more answers")
    traffic.stop()
    assert_nothing_lost(traffic, "sidecar-plugin stop + start")
    assert traffic.stream_outcomes == {3: "ok"}, traffic.summary()
    assert sc.state().pid != st.pid


def test_hang_kill_serves_what_waited(make_sidecar):
    sc = make_sidecar(workers=2, mode={"hang_after": 3}, render_args=["--hang-window", "5"])
    st = started(sc)
    sc.set_mode({})  # the replacement behaves
    # a connection accepted between the hang and the loop's block is lost with it: wait until both
    # workers' loops are blocked (as a blocked event loop, they accept nothing more)
    poll(lambda: open(sc.log_file).read().count("accepts nothing now") >= 2, 15, what="both workers accepting nothing")
    traffic = Traffic(sc.port, MASTER_KEY, FAST, rate=10).start()  # arrives while it hangs
    crashed = sc.wait_state("crashed", 30)
    assert "stopped answering" in crashed.error
    running(sc, other_than=st.pid)
    poll(lambda: traffic.short["ok"] >= 40, 30, what="answers from the replacement")
    traffic.stop()
    assert_nothing_lost(traffic, "hang kill")


@pytest.mark.oldest  # tests/integration/test_oldest.py says why
def test_apply_of_a_worker_count_refuses_nothing(make_sidecar):
    sc = make_sidecar(workers=2)
    st = started(sc)
    traffic = under_traffic(sc)
    i = sc.render_args.index("--workers")
    sc.render_args[i + 1] = "3"
    res = sc.apply()
    assert res.returncode == 0, res.stdout + res.stderr
    assert "refused" not in res.stdout, res.stdout
    new = running(sc, other_than=st.pid)
    poll(lambda: len(psutil.Process(new.pid).children()) == 3, 10, what="three workers")
    poll(lambda: traffic.short["ok"] >= 60, 20, what="more answers")
    traffic.stop()
    assert_nothing_lost(traffic, "apply --workers 2 -> 3")
    assert traffic.stream_outcomes == {3: "ok"}, traffic.summary()


@pytest.mark.oldest  # tests/integration/test_oldest.py says why
def test_update_and_reload_keep_the_socket(make_sidecar):
    sc = make_sidecar(workers=2)
    started(sc)
    with open(sc.conf, "a") as fh:  # an unrelated program comes and goes
        fh.write("\n[program:other]\ncommand=sleep 3600\nautostart=false\n")
    traffic = under_traffic(sc, streams=())
    for args in (("reread",), ("update",), ("reload",)):
        res = sc.ctl(*args, timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
    poll(sc._rpc_up, 30, what="supervisord back")
    running(sc, timeout=60)
    poll(lambda: traffic.short["ok"] >= 60, 30, what="more answers")
    traffic.stop()
    assert_nothing_lost(traffic, "supervisorctl reread + update + reload")
