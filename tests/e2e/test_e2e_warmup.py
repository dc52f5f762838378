"""With the real LiteLLM, each new worker is warmed before it serves (the launcher's ``warmup``).

LiteLLM imports and initialises more on a worker's first ``/v1/messages`` and
first ``count_tokens`` (1.3 to 4.8 s measured on this 2-core host): the first
requests fresh workers take, at a start as after a restart in place, used to
wait that long. Here each batch sends, at once, on connections of their own,
short requests and token counts to the fresh workers, then a second batch to
the same (warm) workers: the first batch may take no longer than the second
by more than ``MARGIN``. The warm-up reaches no upstream (the loopback
stand-in counts 0 requests) and counts in no metric (LiteLLM's Prometheus
scrape counts only the batches). With ``SIDECAR_WARMUP=0`` in the environment
the launcher does not warm up: the first batch's test fails (its figures, printed
with ``-s``, are the "before").
"""

import os
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness import poll, run_cli
from test_e2e_litellm import GATEWAY_TOKEN, messages, real_sidecar, upstream  # noqa: F401 (a fixture)
from test_e2e_port import START, workers
from test_e2e_traffic_metrics import counted, expected, scrape, settle

pytestmark = pytest.mark.e2e

OFF = os.environ.get("SIDECAR_WARMUP") == "0"  # the launcher told not to warm up: the figures "before"
MARGIN = 1.0  # seconds a fresh worker's first requests may take beyond a warm worker's
SHORT, COUNTS = 4, 2  # a batch: short requests and token counts, all at once


def batch(port):
    """Send a batch at once; return (the longest short request, the longest token count), in seconds."""
    def one(path):
        t0 = time.monotonic()
        resp = messages(port, "fast", path=path, thinking=False) if path.endswith("count_tokens") \
            else messages(port, "fast")
        assert resp.status_code == 200, resp.text[:300]
        return path, time.monotonic() - t0

    with ThreadPoolExecutor(SHORT + COUNTS) as pool:
        took = list(pool.map(one, ["/v1/messages"] * SHORT + ["/v1/messages/count_tokens"] * COUNTS))
    return (max(t for p, t in took if p == "/v1/messages"), max(t for p, t in took if p != "/v1/messages"))


def warmed(sc, pids, offset=0):
    """The launcher's line for each worker in ``pids`` (the log from ``offset``): warmed, or why not."""
    def lines():
        log = open(sc.log_file, errors="replace").read()[offset:]
        said = {int(m.group(1)): m.group(0) for m in re.finditer(r"worker (\d+)(?: warmed up in|: warm-up) .*", log)}
        return said if set(pids) <= set(said) else None
    return {} if OFF else poll(lines, 60, interval=0.5, what="each worker's warm-up line")


def test_real_litellm_fresh_workers_serve_their_first_requests_warm(make_sidecar, upstream):  # noqa: F811
    sc, st = real_sidecar(make_sidecar, upstream, 2, "name: warm\n")
    poll(lambda: len(workers(st.pid)) == 2, 60, what="two workers")
    said = warmed(sc, [p.pid for p in workers(st.pid)])
    assert upstream.requests() == []  # the warm-up reached no upstream
    assert counted(scrape(sc.port).text) == {"requests": {}, "failed": {}, "latency": {}, "tokens": {}}
    first, warm = batch(sc.port), batch(sc.port)

    offset = os.path.getsize(sc.log_file)
    res = run_cli("restart", "--state-file", sc.state_file, "-s", "unix://" + sc.sock, timeout=START + 120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "in place" in res.stdout, res.stdout
    poll(lambda: len(workers(st.pid)) == 2, 60, what="two new workers")
    said_after = warmed(sc, [p.pid for p in workers(st.pid)], offset)
    after_first, after_warm = batch(sc.port), batch(sc.port)
    print(f"\nROW real LiteLLM | fresh workers' first requests ({'warm-up off' if OFF else 'warm-up'}) | "
          f"at the start: short {first[0]:.2f} s, count_tokens {first[1]:.2f} s (warm: {warm[0]:.2f} s, {warm[1]:.2f} s)"
          f" | after a restart in place: short {after_first[0]:.2f} s, count_tokens {after_first[1]:.2f} s "
          f"(warm: {after_warm[0]:.2f} s, {after_warm[1]:.2f} s) | {sorted(said.values()) + sorted(said_after.values())}")

    assert len(said) == 2, said
    assert len(said_after) == 2, said_after
    assert all("warmed up" in line for line in list(said.values()) + list(said_after.values())), (said, said_after)
    assert len(upstream.requests()) == 4 * SHORT  # the batches' short requests, nothing of the warm-ups
    settle(sc.port, expected([{"fast": (4 * SHORT, 0)}]))  # the warm-ups count nowhere
    assert GATEWAY_TOKEN not in open(sc.log_file, errors="replace").read()
    for cold, hot in ((first, warm), (after_first, after_warm)):
        assert cold[0] - hot[0] < MARGIN, (first, warm, after_first, after_warm)
        assert cold[1] - hot[1] < MARGIN, (first, warm, after_first, after_warm)
