"""Each new worker warms its app before it accepts a request (the launcher's ``warmup``).

The real launcher serves the light app (``light_app``) with the warm-up on
(``SIDECAR_WARMUP=1``: by default it runs for LiteLLM's app only); the light
app writes ``warm <pid> <path>`` for each warm-up request it gets and
``cold <pid>`` when a worker serves the traffic before both warm-up requests
reached it. Without the warm-up (``SIDECAR_WARMUP=0``, or the ``install`` line
of the launcher's ``__main__`` removed) every worker's first request is cold
and the first test fails.
"""

import os
import re
import signal

import pytest

from harness import MASTER_KEY, live_children, poll, run_cli
from test_memory_budget import HERE, light_binary
from test_nowait import FAST
from test_port import started
from traffic import Traffic

pytestmark = pytest.mark.integration


def light(make_sidecar, tmp_path, mode=None):
    return make_sidecar(workers=2, binary=light_binary(str(tmp_path)), mode=mode,
                        env={"SIDECAR_APP": "light_app:app", "PYTHONPATH": HERE, "SIDECAR_WARMUP": "1"})


def notes(sc):
    """(the warm-up paths each worker got, the workers that served a request cold), from the light app's file."""
    warm, cold = {}, set()
    try:
        with open(os.path.join(sc.out, "light_warm")) as fh:
            lines = fh.read().split()
    except FileNotFoundError:
        lines = []
    for word, pid, rest in zip(lines, lines[1:], lines[2:] + [""]):
        if word == "warm":
            warm.setdefault(int(pid), []).append(rest)
        elif word == "cold":
            cold.add(int(pid))
    return warm, cold


def workers(pid):
    return {c.pid for c in live_children(pid)}


def test_every_new_worker_is_warmed_before_it_serves_a_request(make_sidecar, tmp_path):
    sc = light(make_sidecar, tmp_path)
    st = started(sc)
    seen = set(workers(st.pid))
    traffic = Traffic(sc.port, MASTER_KEY, FAST, rate=10, keepalive=True).start()
    try:
        poll(lambda: traffic.short["ok"] >= 10, 15, what="traffic flowing")
        res = run_cli("restart", "--state-file", sc.state_file, "-s", "unix://" + sc.sock, timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "in place" in res.stdout, res.stdout
        seen |= workers(st.pid)
        before = workers(st.pid)
        os.kill(st.pid, signal.SIGHUP)  # a rolling reload: each worker replaced by one that serves first
        poll(lambda: not before & workers(st.pid) and len(workers(st.pid)) == 2, 30, what="the workers reloaded")
        seen |= workers(st.pid)
        served = traffic.short["ok"]
        poll(lambda: traffic.short["ok"] >= served + 10, 15, what="the new workers serving")
    finally:
        traffic.stop()
    warm, cold = notes(sc)
    assert traffic.lost == 0, traffic.summary()
    assert len(seen) >= 6, seen  # the first two, the restart's two, the reload's two
    assert cold == set(), (cold, warm)
    assert {pid: sorted(paths) for pid, paths in warm.items() if pid in seen} == \
        {pid: ["/v1/messages", "/v1/messages/count_tokens"] for pid in seen}
    log = open(sc.log_file).read()
    assert len(re.findall(r"sidecar launcher: worker \d+ warmed up in", log)) >= 6, log[-3000:]
    assert MASTER_KEY not in log


def test_a_failed_warmup_says_so_on_one_line_and_the_worker_serves(make_sidecar, tmp_path):
    sc = light(make_sidecar, tmp_path, mode={"warm_status": 500})
    st = started(sc)
    traffic = Traffic(sc.port, MASTER_KEY, FAST, rate=10).start()
    try:
        poll(lambda: traffic.short["ok"] >= 10, 15, what="requests answered")
    finally:
        traffic.stop()
    assert traffic.lost == 0, traffic.summary()
    log = open(sc.log_file).read()
    failed = re.findall(r"sidecar launcher: worker (\d+): warm-up failed \(POST /v1/messages answered 500\): "
                        r"serving cold\n", log)
    assert sorted(map(int, failed)) == sorted(workers(st.pid)), log[-3000:]
    assert "warmed up" not in log
    assert MASTER_KEY not in log
