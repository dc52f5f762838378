"""Issue 31's other events under kept-alive clients, with the stand-in LiteLLM (test_nowait.py has the crash,
the restart in place, the hung worker and the drains).

The clients keep their connections alive, as the gateway's Go transport does
(``traffic.Pool``). An ``apply`` of a model change (a rolling reload) must not
make a request wait: its longest wait is judged against a quiet window of the
same traffic in the same test. ``supervisorctl restart`` and ``reload`` are
supervisord's own stop-then-start and keep making requests wait for the start
(issue 31, item 6): there nothing may be refused, fail or be cut, on a reused
connection or not.
"""

import time

import pytest

from harness import MASTER_KEY, PROFILE, poll, write
from test_nowait import judged
from test_port import running, started
from traffic import Traffic, one_request

pytestmark = pytest.mark.integration

FAST = "agentroute-fast"
START = 4.0  # seconds a start and a new worker take (the stand-in's start_delay, worker_start_delay)
QUIET = 3.0  # seconds of traffic measured before the event
STREAM = 10.0  # a stream's length: in flight through the quiet window and the stop


def flowing(sc, streams=()):
    """Kept-alive traffic, flowing; return it and the quiet window's longest wait."""
    traffic = Traffic(sc.port, MASTER_KEY, FAST, rate=10, streams=streams, keepalive=True).start()
    poll(lambda: traffic.short["ok"] >= 5, 15, what="traffic flowing")
    t0 = time.monotonic()
    time.sleep(QUIET)  # the quiet window the traffic runs through (a measurement, not a synchronisation)
    return traffic, traffic.longest_between(t0, time.monotonic())


def test_apply_of_a_model_change_waits_for_nothing(make_sidecar):
    sc = make_sidecar(workers=2)
    st = started(sc)
    # each new worker takes START s before it serves; a stop-then-start would make requests wait as long
    sc.set_mode({"worker_start_delay": START, "start_delay": START})
    traffic, quiet = flowing(sc)
    write(sc.profile, PROFILE + "  extra: qwen/qwen3-coder\n")
    applied_at = time.monotonic()
    res = sc.apply()
    assert res.returncode == 0, res.stdout + res.stderr
    poll(lambda: one_request(sc.port, MASTER_KEY, "agentroute-extra", timeout=10) == "ok", 30,
         what="the new alias served")
    judged("apply of a model change", traffic, quiet, applied_at, START)  # the old workers served meanwhile
    assert sc.state().pid == st.pid  # a rolling reload: the main process stayed


@pytest.mark.parametrize("command", [("restart", "{program}"), ("reload",)], ids=["restart", "reload"])
def test_supervisorctl_stop_then_start_loses_nothing_on_kept_alive_connections(make_sidecar, command):
    sc = make_sidecar(workers=2, mode={"start_delay": 2})
    st = started(sc)
    traffic, _ = flowing(sc, streams=(STREAM,))
    assert not traffic.stream_outcomes, traffic.summary()  # the stream is in flight when the stop begins
    res = sc.ctl(*(a.format(program=sc.program) for a in command), timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    running(sc, timeout=60, other_than=st.pid)
    poll(lambda: traffic.short["ok"] >= 80, 30, what="more answers")
    traffic.stop()
    print(f"\nROW | supervisorctl {command[0]} (kept alive) | {traffic.summary()}")
    assert traffic.short["refused"] == 0, traffic.summary()
    assert traffic.short["failed"] == 0, traffic.summary()
    assert traffic.short["pending"] == 0, traffic.summary()
    assert traffic.stream_outcomes == {STREAM: "ok"}, traffic.summary()  # drained by the stop
    assert traffic.pool.reused_failed == 0, traffic.summary()
    assert traffic.pool.reused > 20, traffic.summary()  # the connections were kept alive and reused
