"""No wait either, with the real LiteLLM (issue 31): a SIGKILL of the main process freezes no request.

The orphaned workers serve until the replacement answers its health check,
then drain; the clients keep their connections alive as the gateway's Go
transport does. The longest a short request took after the kill is measured
against a quiet window of the same traffic (a ratio of the replacement's
start, which requests used to wait for), printed with ``-s``.
"""

import os
import signal
import time

import psutil
import pytest

from harness import CpuHogs, poll
from test_e2e_litellm import GATEWAY_TOKEN, real_sidecar, upstream  # noqa: F401 (a fixture)
from test_e2e_port import START, workers
from test_nowait import QUIET, listener_lines
from traffic import Traffic

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("busy", [False, True], ids=["idle", "busy"])
def test_real_litellm_sigkill_orphans_serve_until_the_replacement_answers(make_sidecar, upstream, busy):  # noqa: F811
    sc, st = real_sidecar(make_sidecar, upstream, 2, "name: nowait\n")
    poll(lambda: len(workers(st.pid)) == 2, 60, what="two workers")
    traffic = Traffic(sc.port, GATEWAY_TOKEN, "agentroute-fast", rate=5, streams=(10,), keepalive=True)
    traffic.timeout = traffic.pool.timeout = START
    traffic.start()
    poll(lambda: traffic.short["ok"] >= 5, 60, what="traffic flowing")
    t0 = time.monotonic()
    time.sleep(QUIET)  # the quiet window the traffic runs through (a measurement, not a synchronisation)
    quiet = traffic.longest_between(t0, time.monotonic())
    orphans = workers(st.pid)
    offset = os.path.getsize(os.path.join(sc.out, "listener.log"))
    hogs = CpuHogs() if busy else None  # a host busy with other work while the replacement starts
    try:
        killed_at = time.monotonic()
        os.kill(st.pid, signal.SIGKILL)
        sc.wait_state("running", START, pred=lambda s: s.pid not in (None, st.pid))
        start = time.monotonic() - killed_at
    finally:
        if hogs is not None:
            hogs.stop()
    poll(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in orphans), 90,
         what="the orphans drained")
    traffic.stop()
    longest = traffic.longest_between(killed_at)
    print(f"\nROW real LiteLLM | SIGKILL of the main process ({'busy' if busy else 'idle'} host), kept-alive clients | "
          f"longest wait {longest:.2f} s "
          f"(quiet {quiet:.2f} s; the replacement took {start:.1f} s to serve) | {traffic.summary()}")
    failures = [(round(sent - killed_at, 2), round(took, 2), out) for sent, took, out in traffic.failures()]
    print(f"failures (sent after the kill, took, outcome): {failures}")
    lines = listener_lines(sc, offset)
    tail = open(sc.log_file, errors="replace").read().splitlines()[-60:]
    assert traffic.lost == 0 and traffic.pool.reused_failed == 0, (traffic.summary(), lines, tail)
    assert (longest - quiet) / start < 0.25, (traffic.summary(), lines)
    assert "(hung)" not in "\n".join(tail), tail  # a worker busy or starved is no hung worker
    served = [i for i, msg in enumerate(lines) if msg.endswith("-> running")]
    drained = [i for i, msg in enumerate(lines) if "draining orphaned process(es)" in msg]
    assert served and drained and drained[0] > served[0], lines
