"""LiteLLM's own traffic metrics on the sidecar's port, counted over all its workers (issue 33).

The real LiteLLM (2 workers, the launcher on supervisord's socket) and the
loopback upstream, which answers 500 for a model it cannot serve. Known numbers
of plain and streamed requests per tier, sent concurrently (each on its own
connection: either worker may take it), then a scrape of ``/metrics/`` with the
master key: exactly those counts per alias, the failures by status, latency and
tokens. An ``apply`` of a model change in between replaces every worker (a
rolling reload): the scrape that follows still counts the first batch, which
only the workers that left served, and the next batch, served by the new
workers, adds to it. The litellm_* names the shipped alert and dashboard use are in
the scrape.
"""

import hashlib
import os
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ecosystem import DASHBOARD, RULES
from harness import API_KEY, poll
from test_e2e_litellm import APPLY_LIMIT, GATEWAY_RENDER, GATEWAY_TOKEN, http, litellm_binary, messages, stream_events
from fake_openrouter import FakeOpenRouter, UNAVAILABLE

pytestmark = pytest.mark.e2e

TIERS = {"fast": "deepseek/deepseek-v4-flash", "heavy": "anthropic/claude-opus-4.5",
         "broken": UNAVAILABLE + "no-provider"}
BATCH = {"fast": (3, 2), "heavy": (2, 3), "broken": (2, 2)}  # tier -> (plain, streamed) requests
FAILING = {"broken"}
TOKENS = 6  # the stand-in's usage per answer, plain or streamed


@pytest.fixture
def upstream(tmp_path):
    fake = FakeOpenRouter(str(tmp_path / "upstream.jsonl")).start()
    yield fake
    fake.stop()


def send(port, batch):
    """Send every request of ``batch`` concurrently; return Counter of (tier, stream, HTTP status)."""
    def one(job):
        tier, stream = job
        resp = messages(port, tier, stream=stream)
        if stream and resp.status_code == 200:  # read to the end: a stream is logged once it finished
            assert stream_events(resp)[-1]["type"] == "message_stop"
        return tier, stream, resp.status_code

    jobs = [(t, s) for t, (plain, streamed) in batch.items() for s, n in ((False, plain), (True, streamed))
            for _ in range(n)]
    with ThreadPoolExecutor(4) as pool:
        return Counter(pool.map(one, jobs))


def scrape(port, key=GATEWAY_TOKEN):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return http().get(f"http://127.0.0.1:{port}/metrics/", headers=headers, timeout=60)


def samples(text):
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def per_alias(text, name, by=("requested_model",), **match):
    """{label values of ``by``: summed value} of the samples named ``name`` matching ``match``, tiers only."""
    out = Counter()
    for s in samples(text):
        if s.name == name and all(s.labels.get(k) == v for k, v in match.items()) \
                and s.labels.get(by[0], "").startswith("agentroute-"):
            out[tuple(s.labels.get(k) for k in by)] += s.value
    return dict(out)


def expected(batches):
    """What the scrape must say after ``batches`` (each a BATCH-like mapping), per alias."""
    total, ok, failed = Counter(), Counter(), Counter()
    for batch in batches:
        for tier, (plain, streamed) in batch.items():
            alias = f"agentroute-{tier}"
            total[(alias, "500" if tier in FAILING else "200")] += plain + streamed
            (failed if tier in FAILING else ok)[alias] += plain + streamed
    return {"requests": dict(total), "failed": {(a, "500"): float(n) for a, n in failed.items()},
            "latency": {(a,): float(n) for a, n in ok.items()},
            "tokens": {(a,): float(n * TOKENS) for a, n in ok.items()}}


def counted(text):
    return {"requests": per_alias(text, "litellm_proxy_total_requests_metric_total",
                                  ("requested_model", "status_code")),
            "failed": per_alias(text, "litellm_proxy_failed_requests_metric_total",
                                ("requested_model", "exception_status")),
            "latency": per_alias(text, "litellm_request_total_latency_metric_count", ("model_group",)),
            "tokens": per_alias(text, "litellm_total_tokens_metric_total")}


def settle(port, want):
    """The scrape once it counts ``want`` (LiteLLM logs a request just after answering it); fail past it."""
    def check():
        text = scrape(port).text
        return text if counted(text) == want else None
    try:
        return poll(check, 60, interval=0.5, what="the expected counts")
    except AssertionError:
        raise AssertionError(f"counted {counted(scrape(port).text)}, expected {want}") from None


def workers(pid):
    return sorted(p.pid for p in psutil.Process(pid).children())


def shipped_litellm_names():
    """The litellm_* series the shipped rules and dashboard query (histograms by their _bucket/_count/_sum)."""
    names = set()
    for path in (RULES, DASHBOARD):
        with open(path) as fh:
            names |= set(re.findall(r"\blitellm_[a-z_]+", fh.read()))
    return names


def test_traffic_metrics_count_every_request_per_tier_over_workers_and_an_apply(make_sidecar, upstream):
    profile = "name: traffic\nmodels:\n" + "".join(f"  {t}: {m}\n" for t, m in TIERS.items()) + \
        f"api_base: {upstream.base_url}\n"
    sc = make_sidecar(workers=2, binary=litellm_binary(), profile_text=profile, **GATEWAY_RENDER)
    sc.start_supervisord(wait_state=None)
    st = sc.wait_state("running", 360)
    with open(os.path.join(sc.out, "litellm.yaml")) as fh:
        assert "prometheus" in fh.read()
    port = sc.port

    # behind the master key, as LiteLLM serves it
    assert scrape(port, key=None).status_code == 401
    assert scrape(port, key="sk-not-the-key").status_code in (400, 401, 403)

    sent = send(port, BATCH)
    assert sent == Counter({(t, s, 500 if t in FAILING else 200): n for t, (p, q) in BATCH.items()
                            for s, n in ((False, p), (True, q)) if n})
    text = settle(port, expected([BATCH]))
    # the failures reached the upstream and were answered 500 there (LiteLLM retries: at least once each)
    bad = [r for r in upstream.requests() if r["model"].startswith(UNAVAILABLE)]
    assert len(bad) >= sum(BATCH["broken"])
    # what LiteLLM says they cost: a series per tier (0 here: its offline price list has no OpenRouter prices,
    # which it counts as zero-cost requests)
    assert set(per_alias(text, "litellm_spend_metric_total")) == {("agentroute-fast",), ("agentroute-heavy",)}

    # nothing secret in a label: no key (nor its hash), no prompt
    values = {v for s in samples(text) for v in s.labels.values()}
    for secret in (GATEWAY_TOKEN, API_KEY, hashlib.sha256(GATEWAY_TOKEN.encode()).hexdigest(), "ping"):
        assert not [v for v in values if secret in v], secret

    # an apply of a model change: a rolling reload replaces both workers; no count goes back
    before = workers(st.pid)
    profile = open(sc.profile).read()
    with open(sc.profile, "w") as fh:
        fh.write(profile.replace("models:\n", "models:\n  extra: qwen/qwen3-coder\n"))
    res = sc.apply(timeout=APPLY_LIMIT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SIGHUP" in res.stdout, res.stdout + res.stderr
    poll(lambda: not set(before) & set(workers(st.pid)), 60, interval=0.2, what="the old workers to leave")
    assert counted(scrape(port).text) == expected([BATCH])
    # the workers that left still count: their files stay in the tree's folder
    folder = os.path.join(sc.out, "run", "prometheus")
    pids = {int(m.group(1)) for m in map(re.compile(r"[a-z_]+_(\d+)\.db$").match, os.listdir(folder)) if m}
    assert set(before) <= pids, (before, pids)

    more = dict(BATCH, extra=(1, 1))
    send(port, more)
    text = settle(port, expected([BATCH, more]))

    # every litellm_* series the shipped alert and dashboard query is in a real scrape
    names = {s.name for s in samples(text)} | {f.name for f in text_string_to_metric_families(text)}
    assert shipped_litellm_names(), shipped_litellm_names() - names
    assert shipped_litellm_names() <= names, shipped_litellm_names() - names
