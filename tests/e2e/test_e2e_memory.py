"""A memory budget just above the real LiteLLM's idle size, under traffic (issue 24): nothing lost.

The real LiteLLM 1.106.2 under the launcher, 2 workers. Its workers' idle PSS
is measured first; then ``apply --memory-budget`` sets the budget a little
above it (only the listener is replaced: the launcher already runs with
``--worker_control``). Serving grows each worker past the budget, so workers
are replaced (a new one serving first, the old one draining), and a
replacement that is over budget soon after its start makes the budget back
off. Short requests and streams flow throughout; none may be refused, fail
or be cut. The workers are not warmed up (``SIDECAR_WARMUP=0``): serving must
grow them past the budget. Figures with ``-s``.
"""

import json
import os

import pytest

from harness import poll
from test_e2e_litellm import APPLY_LIMIT, GATEWAY_RENDER, GATEWAY_TOKEN, TIERS, litellm_binary, upstream  # noqa: F401
from traffic import Traffic

pytestmark = pytest.mark.e2e

ABOVE_IDLE = 15  # MB over the largest idle worker's PSS
RUN_FOR = 150  # seconds of traffic after the budget is set


def memory(sc):
    with open(sc.state_file) as fh:
        return json.load(fh).get("memory") or {}


def test_real_litellm_budget_just_above_idle_loses_nothing(make_sidecar, upstream):  # noqa: F811
    profile = "name: budget\nmodels:\n" + "".join(f"  {t}: {m}\n" for t, m in TIERS.items()) + \
        f"api_base: {upstream.base_url}\n"
    render = GATEWAY_RENDER["render_args"] + ["--memory-budget", "4096", "--memory-every", "2"]
    # cold workers (no warm-up): a warmed worker's idle size is already what its first requests grow it to, so
    # the traffic here would not cross a budget just above it within the run (test_e2e_warmup covers the warm-up)
    sc = make_sidecar(workers=2, binary=litellm_binary(), profile_text=profile, render_args=render,
                      render_env=GATEWAY_RENDER["render_env"], env={"SIDECAR_WARMUP": "0"})
    assert "--worker_control" in open(os.path.join(sc.out, "launch.json")).read()  # the launcher's argv
    sc.start_supervisord(wait_state=None)
    st = sc.wait_state("running", 360)
    idle = poll(lambda: [p["mb"] for p in memory(sc).get("processes", []) if p["role"] == "worker"], 60,
                what="the workers' memory sampled")
    budget = int(max(idle)) + ABOVE_IDLE
    res = sc.apply("--memory-budget", str(budget), "--timeout", "120", timeout=APPLY_LIMIT)
    assert res.returncode == 0, res.stdout + res.stderr
    poll(lambda: memory(sc).get("budget_mb") == budget, 60, what="the new listener's budget")
    assert sc.state().pid == st.pid  # only the listener was replaced

    traffic = Traffic(sc.port, GATEWAY_TOKEN, "agentroute-fast", rate=5, streams=(5, 20, 60))
    traffic.timeout = 240
    traffic.start()
    try:
        poll(lambda: memory(sc).get("replacements", 0) >= 1, RUN_FOR, interval=1, what="a worker replaced")
        # traffic goes on until the longest stream has ended: it was served across the replacements
        poll(lambda: max(traffic.streams) in traffic.stream_outcomes, RUN_FOR, interval=1, what="the longest stream")
    finally:
        traffic.stop()
    mem = memory(sc)
    cut = sum(1 for o in traffic.stream_outcomes.values() if o == "cut")
    print(f"\nROW real LiteLLM | memory budget {budget} MB (idle workers {', '.join(f'{m:.0f}' for m in idle)} MB PSS) "
          f"| refused {traffic.short['refused']} | failed {traffic.short['failed']} | cut {cut} | "
          f"ok {traffic.short['ok']} | replaced {mem['replacements']} | failed replacements {mem['failures']} | "
          f"back-offs {mem['backoffs']} | now {[(p['role'], p['mb']) for p in mem['processes']]}")
    assert traffic.short["refused"] == 0, traffic.summary()
    assert traffic.short["failed"] == 0, traffic.summary()
    assert cut == 0, traffic.stream_outcomes
    assert traffic.stream_outcomes == {5: "ok", 20: "ok", 60: "ok"}, traffic.summary()  # each ended, none cut
    assert traffic.short["pending"] == 0, traffic.summary()  # unanswered when the traffic stopped
    assert traffic.short["ok"] == traffic.sent, traffic.summary()  # every request sent was answered
    assert mem["replacements"] >= 1
    assert mem["failures"] == 0
    assert sc.state().pid == st.pid
    assert sc.state().state.value == "running"
    asked = [e for e in sc.history() if e.get("event") == "memory_replace"]
    assert asked
    assert all(e["budget_mb"] == budget and e["mb"] > budget for e in asked)
