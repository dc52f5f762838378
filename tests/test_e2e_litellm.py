"""The whole chain with the real LiteLLM proxy, as the gateway uses it.

gateway (this test) --Anthropic /v1/messages--> LiteLLM (supervised, 2 workers)
--OpenAI chat/completions--> loopback stand-in for OpenRouter. Offline.
"""

import json
import os
import shutil
import signal
import sys

import psutil
import pytest
import requests

from harness import API_KEY, MASTER_KEY
from fake_openrouter import FakeOpenRouter
from traffic import Traffic
from sidecar_plugin.client import Sidecar, State

pytestmark = pytest.mark.e2e

TIERS = {"heavy": "anthropic/claude-opus-4.5", "balanced": "openrouter/anthropic/claude-sonnet-4.5",
         "fast": "deepseek/deepseek-v4-flash"}


def litellm_binary():
    found = shutil.which("litellm") or shutil.which("litellm", path=os.path.dirname(sys.executable))
    if found is None:
        if os.environ.get("SIDECAR_E2E_REQUIRED"):
            pytest.fail("litellm is not installed (make test installs it)")
        pytest.skip("litellm is not installed; `make test` installs it")
    return found


@pytest.fixture
def upstream(tmp_path):
    fake = FakeOpenRouter(str(tmp_path / "upstream.jsonl")).start()
    yield fake
    fake.stop()


def http():
    s = requests.Session()
    s.trust_env = False
    return s


def messages(port, tier, stream=False, key=MASTER_KEY):
    headers = {"content-type": "application/json", "anthropic-version": "2023-06-01"}
    if key is not None:
        headers["x-api-key"] = key
    body = {"model": f"agentroute-{tier}", "max_tokens": 64, "stream": stream,
            "messages": [{"role": "user", "content": "ping"}]}
    return http().post(f"http://127.0.0.1:{port}/v1/messages", json=body, headers=headers, timeout=60,
                       stream=stream)


def stream_text(resp):
    text = ""
    for line in resp.iter_lines(decode_unicode=True):
        if line and line.startswith("data:"):
            data = line[5:].strip()
            if data and data != "[DONE]":
                event = json.loads(data)
                if event.get("type") == "content_block_delta":
                    text += event["delta"].get("text", "")
    return text


def test_full_chain_with_real_litellm(make_sidecar, upstream):
    binary = litellm_binary()
    profile = "name: e2e\nmodels:\n" + "".join(f"  {t}: {m}\n" for t, m in TIERS.items()) + \
        f"api_base: {upstream.base_url}\n"
    sc = make_sidecar(workers=2, binary=binary, profile_text=profile, render_args=["--health-timeout", "90"])
    sc.start_supervisord(wait_state=None)
    st = sc.wait_state("running", 120)
    port = sc.port

    # the aliases are served, behind the master key
    models = http().get(f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": f"Bearer {MASTER_KEY}"},
                        timeout=30)
    assert models.status_code == 200
    assert {m["id"] for m in models.json()["data"]} >= {f"agentroute-{t}" for t in TIERS}

    for tier, model in TIERS.items():
        bare = model[len("openrouter/"):] if model.startswith("openrouter/") else model
        resp = messages(port, tier)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["type"] == "message" and body["content"][0]["text"] == f"pong from {bare}"
        resp = messages(port, tier, stream=True)
        assert resp.status_code == 200
        assert stream_text(resp) == f"pong from {bare}"
        sent = [r for r in upstream.requests() if r["model"] == bare]
        assert len(sent) == 2 and {r["stream"] for r in sent} == {False, True}
        assert all(r["authorization"] == f"Bearer {API_KEY}" for r in sent)

    # a wrong key and no key are refused, and nothing reaches the upstream
    # (LiteLLM 1.106.2 answers "no key" with a 500 from its auth handler: still a refusal)
    before = len(upstream.requests())
    assert messages(port, "fast", key="sk-wrong-key-0000").status_code in (400, 401, 403)
    assert messages(port, "fast", key=None).status_code >= 400
    assert len(upstream.requests()) == before

    # it listens on 127.0.0.1 only
    listening = [c for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
    assert listening and {c.laddr.ip for c in listening} == {"127.0.0.1"}

    # SIGKILL of LiteLLM's parent: orphaned workers reaped, port freed, running again with a new pid
    parent = psutil.Process(st.pid)
    old_tree = parent.children(recursive=True)
    assert old_tree, "expected LiteLLM worker processes"
    os.kill(st.pid, signal.SIGKILL)
    sc.wait_state("crashed", 10, pred=lambda s: s.pid != st.pid)
    psutil.wait_procs(old_tree, timeout=5)
    assert not [p for p in old_tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    again = sc.wait_state("running", 120, pred=lambda s: s.pid not in (None, st.pid))
    assert again.pid != st.pid
    assert messages(port, "heavy").status_code == 200

    # supervisorctl stop: nothing left, port free
    res = sc.ctl("stop", sc.program)
    assert res.returncode == 0, res.stdout
    sc.wait_state("stopped", 30, pred=lambda s: s.supervisor_state == "STOPPED")
    assert sc.marked() == [] and sc.port_listeners() == []

    # Sidecar.start()/stop(): the Go Supervisor's blocking semantics
    c = Sidecar(state_file=sc.state_file, program=sc.program, server_url="unix://" + sc.sock)
    c.start(timeout=120)
    assert c.state() is State.RUNNING and messages(port, "fast").status_code == 200

    # apply a changed profile (a new tier) under traffic: validated, workers replaced one at a time (SIGHUP),
    # the new alias served, and the gateway saw no refused or failed request and no cut stream
    with open(sc.profile, "w") as fh:
        fh.write(profile.replace("models:\n", "models:\n  extra: qwen/qwen3-coder\n"))
    before_apply = c.read().pid
    upstream.seconds_per_token = 0.1  # streams of max_tokens / 10 seconds
    traffic = Traffic(port, MASTER_KEY, "agentroute-fast", rate=3, streams=(3, 8, 15, 30)).start()
    res = sc.apply()
    traffic.stop()
    upstream.seconds_per_token = 0.0
    assert res.returncode == 0 and res.stdout.strip().endswith("changed: true"), res.stdout + res.stderr
    assert "passes litellm --validate_config" in res.stdout and "SIGHUP" in res.stdout, res.stdout
    assert traffic.lost == 0 and traffic.short["ok"] > 0, traffic.summary()
    assert c.read().pid == before_apply
    models = http().get(f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": f"Bearer {MASTER_KEY}"},
                        timeout=30)
    assert "agentroute-extra" in {m["id"] for m in models.json()["data"]}
    assert messages(port, "extra").status_code == 200
    c.stop(timeout=30)
    assert sc.marked() == [] and sc.port_listeners() == []
    assert c.state() is State.STOPPED
