"""What LiteLLM's traffic metrics cost (issue 33): memory and the time of a short request, on and off.

The real LiteLLM, rendered with the defaults (2 workers, the launcher on
supervisord's socket) under a real supervisord, once with its traffic metrics
(the default) and once with ``--no-traffic-metrics``, in one run, both up at
once, through the same loopback upstream (tests/support/fake_openrouter.py):
``--requests`` short ``/v1/messages`` to each (each on its own connection, one
at a time, alternating between the two so both see the same host load, after 5
to warm up), then the PSS of each whole tree (launcher and workers), and with
metrics on the time of a scrape of ``/metrics/``. Prints a Markdown table for
benchmarks/RESULTS.md. Only to 127.0.0.1.

    .venv/bin/python benchmarks/metrics_cost.py [--requests 200]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Dict, List

import psutil
import requests

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "support"))

from fake_openrouter import FakeOpenRouter  # noqa: E402
from harness import MASTER_KEY, Sidecar  # noqa: E402

PROFILE = "name: bench\nmodels:\n  fast: deepseek/deepseek-v4-flash\n  heavy: anthropic/claude-opus-4.5\n"


def short_request(port: int) -> float:
    """One short, plain /v1/messages on a fresh connection; its seconds."""
    session = requests.Session()
    session.trust_env = False
    began = time.perf_counter()
    resp = session.post(f"http://127.0.0.1:{port}/v1/messages", timeout=120,
                        headers={"Authorization": f"Bearer {MASTER_KEY}", "content-type": "application/json"},
                        json={"model": "agentroute-fast", "max_tokens": 16,
                              "messages": [{"role": "user", "content": "ping"}]})
    took = time.perf_counter() - began
    session.close()
    assert resp.status_code == 200, resp.text[:300]
    return took


def tree_pss_mb(pid: int) -> float:
    procs = [psutil.Process(pid)] + psutil.Process(pid).children(recursive=True)
    return sum(p.memory_full_info().pss for p in procs) / 2**20


def scrape_cost(port: int) -> Dict[str, float]:
    session = requests.Session()
    session.trust_env = False
    began = time.perf_counter()
    scrape = session.get(f"http://127.0.0.1:{port}/metrics/", timeout=60,
                         headers={"Authorization": f"Bearer {MASTER_KEY}"})
    took = (time.perf_counter() - began) * 1000
    assert scrape.status_code == 200
    return {"scrape_ms": took, "scrape_kb": len(scrape.content) / 1024}


def measure(work: str, upstream: FakeOpenRouter, n: int) -> Dict[str, Dict[str, float]]:
    """Both sidecars up at once, their requests interleaved (on, off, on, ...): the same host load for both."""
    binary = shutil.which("litellm") or os.path.join(os.path.dirname(sys.executable), "litellm")
    made = {}
    try:
        for name, args in SETUPS.items():
            folder = os.path.join(work, name.split()[0])
            os.makedirs(folder)
            made[name] = Sidecar(folder, workers=2, binary=binary, render_args=args,
                                 profile_text=PROFILE + f"api_base: {upstream.base_url}\n")
            made[name].start_supervisord(wait_state=None)
        pids = {name: sc.wait_state("running", 600).pid for name, sc in made.items()}
        times: Dict[str, List[float]] = {name: [] for name in made}
        for i in range(n + 5):
            for name, sc in made.items():
                took = short_request(sc.port)
                if i >= 5:  # the first ones warm up
                    times[name].append(took)
        time.sleep(2)  # LiteLLM logs (and counts) a request just after answering it
        out = {}
        for name, sc in made.items():
            out[name] = {"median_ms": statistics.median(times[name]) * 1000,
                         "p95_ms": sorted(times[name])[int(0.95 * (n - 1))] * 1000, "pss_mb": tree_pss_mb(pids[name])}
            if not SETUPS[name]:
                out[name].update(scrape_cost(sc.port))
        return out
    finally:
        for sc in made.values():
            sc.cleanup()


SETUPS = {"on (default)": [], "off (--no-traffic-metrics)": ["--no-traffic-metrics"]}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--requests", type=int, default=200)
    a = p.parse_args()
    upstream = FakeOpenRouter(keep_records=False).start()
    work = tempfile.mkdtemp(prefix="metrics-cost-")
    try:
        results = measure(work, upstream, a.requests)
    finally:
        upstream.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"| traffic metrics | PSS of the tree (launcher + 2 workers) after {a.requests + 5} requests "
          "| short request, median | p95 | a scrape of /metrics/ |")
    print("| --- | --- | --- | --- | --- |")
    for name, r in results.items():
        scrape = f"{r['scrape_ms']:.0f} ms, {r['scrape_kb']:.0f} KB" if "scrape_ms" in r else "none"
        print(f"| {name} | {r['pss_mb']:.0f} MB | {r['median_ms']:.1f} ms | {r['p95_ms']:.1f} ms | {scrape} |")
    print(f"\n(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})")


if __name__ == "__main__":
    main()
