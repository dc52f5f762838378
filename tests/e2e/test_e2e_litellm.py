"""The whole chain with the real LiteLLM proxy, as the gateway uses it.

gateway (this test) --Anthropic /v1/messages--> LiteLLM (supervised, 2 workers)
--OpenAI chat/completions--> loopback stand-in for OpenRouter. Offline.

Requests are made as AgentRoute's gateway makes them: ``Authorization: Bearer``
with its 64-hex token as the master key (given to render in the variable named
by ``--master-key-env``), Anthropic's headers passed through, ``thinking`` on.
"""

import json
import os
import secrets
import shutil
import signal
import sys

import psutil
import pytest
import requests

from harness import API_KEY, MASTER_KEY, lives, run_cli
from fake_openrouter import FakeOpenRouter
from traffic import Traffic
from sidecar_plugin.client import Sidecar, State

pytestmark = pytest.mark.e2e

TIERS = {"heavy": "anthropic/claude-opus-4.5", "balanced": "openrouter/anthropic/claude-sonnet-4.5",
         "fast": "deepseek/deepseek-v4-flash"}
# AgentRoute's gateway token: 64 hex characters, no sk- prefix; render reads it from the variable named here
GATEWAY_TOKEN = secrets.token_hex(32)
TOKEN_ENV = "AGENTROUTE_GATEWAY_TOKEN"
GATEWAY_RENDER = {"render_args": ["--master-key-env", TOKEN_ENV], "render_env": {TOKEN_ENV: GATEWAY_TOKEN}}
THINKING = {"type": "enabled", "budget_tokens": 1024}
# how long an apply may take with the real LiteLLM: its --validate_config imports LiteLLM, and each new worker starts
# and warms up; on a loaded 2-core host (make test's five workers) that took over 120 s once (an outcome is
# asserted here, not a time: make bench measures them)
APPLY_LIMIT = 360


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


def gateway_headers(key):
    """The headers AgentRoute's gateway sends: its Authorization replaced, Anthropic's passed through."""
    headers = {"content-type": "application/json", "anthropic-version": "2023-06-01",
               "anthropic-beta": "interleaved-thinking-2025-05-14"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return headers


def messages(port, tier, stream=False, key=GATEWAY_TOKEN, path="/v1/messages", thinking=True):
    body = {"model": tier if tier.startswith("agentroute-") else f"agentroute-{tier}",
            "messages": [{"role": "user", "content": "ping"}]}
    if path == "/v1/messages":
        body.update(max_tokens=2048, stream=stream)
        if thinking:
            body["thinking"] = THINKING
    return http().post(f"http://127.0.0.1:{port}{path}", json=body, headers=gateway_headers(key), timeout=60,
                       stream=stream)


def stream_events(resp):
    """The Anthropic SSE events of a streamed reply, in order."""
    events = []
    for line in resp.iter_lines(decode_unicode=True):
        if line and line.startswith("data:"):
            data = line[5:].strip()
            if data and data != "[DONE]":
                events.append(json.loads(data))
    return events


def streamed(events, kind):
    """The text of one kind of delta (``text`` or ``thinking``) in a streamed reply."""
    return "".join(e["delta"].get(kind, "") for e in events
                   if e.get("type") == "content_block_delta" and e["delta"].get("type") == f"{kind}_delta")


def stream_text(resp):
    return streamed(stream_events(resp), "text")


def real_sidecar(make_sidecar, upstream, workers, head, tail="", hogs=None):
    """The real LiteLLM rendered as the gateway renders it (the listener's defaults), its profile ``head`` +
    the tiers + ``tail``, pointed at the stand-in upstream; started and running, on its first start even
    beside ``hogs`` (a busy host), which are stopped then. Returns (sidecar, its state)."""
    profile = head + "models:\n" + "".join(f"  {t}: {m}\n" for t, m in TIERS.items()) + \
        f"api_base: {upstream.base_url}\n" + tail
    sc = make_sidecar(workers=workers, binary=litellm_binary(), profile_text=profile,
                      render_args=GATEWAY_RENDER["render_args"], render_env=GATEWAY_RENDER["render_env"])
    sc.start_supervisord(wait_state=None)
    st = sc.wait_state("running", 360)
    if hogs is not None:
        assert hogs.busy(), "the host was not busy for the whole start"
        hogs.stop()
        assert sc.states_until("running") == ["starting", "running"], sc.history()
    return sc, st


def test_full_chain_with_real_litellm(make_sidecar, upstream, cpu_hogs):
    sc, st = real_sidecar(make_sidecar, upstream, 2, "name: e2e\n", hogs=cpu_hogs)
    port = sc.port

    # the aliases are served, behind the gateway's token
    models = http().get(f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": f"Bearer {GATEWAY_TOKEN}"},
                        timeout=30)
    assert models.status_code == 200
    assert {m["id"] for m in models.json()["data"]} >= {f"agentroute-{t}" for t in TIERS}

    for tier, model in TIERS.items():
        bare = model[len("openrouter/"):] if model.startswith("openrouter/") else model
        resp = messages(port, tier)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["type"] == "message"
        assert [(b["type"], b.get("text") or b.get("thinking")) for b in body["content"]] == [
            ("thinking", f"thinking about {bare}"), ("text", f"pong from {bare}")]
        resp = messages(port, tier, stream=True)
        assert resp.status_code == 200
        events = stream_events(resp)
        assert events[0]["type"] == "message_start"
        assert events[-1]["type"] == "message_stop"
        assert streamed(events, "thinking") == f"thinking about {bare}"
        assert streamed(events, "text") == f"pong from {bare}"
        sent = [r for r in upstream.requests() if r["model"] == bare]
        assert len(sent) == 2
        assert {r["stream"] for r in sent} == {False, True}
        assert all(r["authorization"] == f"Bearer {API_KEY}" for r in sent)
        # the thinking parameter reached OpenRouter (as reasoning_effort, or as is for Anthropic's models)
        assert all(r["body"].get("reasoning_effort") or r["body"].get("thinking") == THINKING for r in sent)

    # a wrong key, the suites' sk- key (not the one rendered) and no key are refused; nothing reaches the upstream
    # (LiteLLM 1.106.2 answers "no key" with a 500 from its auth handler, an unknown non-sk- key with a 400)
    before = len(upstream.requests())
    assert messages(port, "fast", key="sk-wrong-key-0000").status_code in (400, 401, 403)
    assert messages(port, "fast", key=MASTER_KEY).status_code in (400, 401, 403)
    assert messages(port, "fast", key=secrets.token_hex(32)).status_code in (400, 401, 403)
    assert messages(port, "fast", key=None).status_code >= 400
    assert len(upstream.requests()) == before

    # it listens on 127.0.0.1 only
    listening = [c for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
    assert listening
    assert {c.laddr.ip for c in listening} == {"127.0.0.1"}

    # SIGKILL of LiteLLM's main process: its orphaned workers serve on (supervisord owns the port), the
    # replacement starts, then they drain and go; running again with a new pid
    parent = psutil.Process(st.pid)
    old_tree = parent.children(recursive=True)
    assert old_tree, "expected LiteLLM worker processes"
    os.kill(st.pid, signal.SIGKILL)
    assert messages(port, "fast").status_code == 200  # answered by an orphan meanwhile
    again = sc.wait_state("running", 120, pred=lambda s: s.pid not in (None, st.pid))
    assert again.pid != st.pid
    assert "crashed" in [h["state"] for h in sc.history()]
    psutil.wait_procs(old_tree, timeout=90)
    assert not [p for p in old_tree if lives(p)]
    assert messages(port, "heavy").status_code == 200

    # supervisorctl stop: nothing left, port free
    res = sc.ctl("stop", sc.program)
    assert res.returncode == 0, res.stdout
    sc.wait_state("stopped", 30, pred=lambda s: s.supervisor_state == "STOPPED")
    assert sc.marked() == []
    assert sc.port_listeners() == []

    # Sidecar.start()/stop(): the Go Supervisor's blocking semantics
    c = Sidecar(state_file=sc.state_file, program=sc.program, server_url="unix://" + sc.sock)
    c.start(timeout=120)
    assert c.state() is State.RUNNING
    assert messages(port, "fast").status_code == 200

    # apply a changed profile (a new tier) under traffic: validated, workers replaced one at a time (SIGHUP),
    # the new alias served, and the gateway saw no refused or failed request and no cut stream
    profile = open(sc.profile).read()
    with open(sc.profile, "w") as fh:
        fh.write(profile.replace("models:\n", "models:\n  extra: qwen/qwen3-coder\n"))
    before_apply = c.read().pid
    upstream.seconds_per_token = 0.1  # streams of max_tokens / 10 seconds
    traffic = Traffic(port, GATEWAY_TOKEN, "agentroute-fast", rate=3, streams=(3, 8, 15, 30)).start()
    res = sc.apply(timeout=APPLY_LIMIT)
    traffic.stop()
    upstream.seconds_per_token = 0.0
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip().endswith("changed: true"), res.stdout + res.stderr
    assert "passes litellm --validate_config" in res.stdout, res.stdout
    assert "SIGHUP" in res.stdout, res.stdout
    assert traffic.lost == 0, traffic.summary()
    assert traffic.short["ok"] > 0, traffic.summary()
    assert c.read().pid == before_apply
    models = http().get(f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": f"Bearer {GATEWAY_TOKEN}"},
                        timeout=30)
    assert "agentroute-extra" in {m["id"] for m in models.json()["data"]}
    assert messages(port, "extra").status_code == 200
    c.stop(timeout=30)
    assert sc.marked() == []
    assert sc.port_listeners() == []
    assert c.state() is State.STOPPED


def anthropic_sdk():
    """The official ``anthropic`` package (the test extra installs it)."""
    try:
        import anthropic
    except ImportError:
        if os.environ.get("SIDECAR_E2E_REQUIRED"):
            pytest.fail("the anthropic SDK is not installed (make test installs it)")
        pytest.skip("the anthropic SDK is not installed; `make test` installs it")
    return anthropic


def test_gateway_requests_and_the_anthropic_sdk(make_sidecar, upstream, monkeypatch):
    """What the gateway sends, found the way a gateway finds it, through LiteLLM and through a client no one here wrote."""
    sdk = anthropic_sdk()
    for var in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(var, raising=False)  # the SDK would add them to its requests
    sc, _ = real_sidecar(make_sidecar, upstream, 1, "name: my work\nport: 0\n",
                         "created: 2026-11-20T10:31:07.123456789Z\n")

    # the gateway finds the URL and where the key is kept; the key itself is never printed
    res = run_cli("endpoint", "--json", "-s", "unix://" + sc.sock)
    assert res.returncode == 0, res.stderr
    endpoint = json.loads(res.stdout)
    assert endpoint["base_url"] == f"http://127.0.0.1:{sc.port}"
    assert endpoint["key_file"] == os.path.join(sc.out, "litellm.yaml")  # a provided key: kept only there
    assert GATEWAY_TOKEN not in res.stdout + res.stderr
    url = endpoint["base_url"]
    session = http()
    body = {"model": "agentroute-fast", "max_tokens": 2048, "thinking": THINKING,
            "messages": [{"role": "user", "content": "ping"}]}

    # count_tokens: answered by LiteLLM itself (a local estimate), nothing sent upstream
    before = len(upstream.requests())
    r = session.post(url + "/v1/messages/count_tokens", headers=gateway_headers(GATEWAY_TOKEN), timeout=60,
                     json={"model": "agentroute-heavy", "messages": body["messages"]})
    assert r.status_code == 200, r.text
    assert isinstance(r.json()["input_tokens"], int)
    assert r.json()["input_tokens"] > 0
    r = session.post(url + "/v1/messages/count_tokens", headers=gateway_headers(secrets.token_hex(32)), timeout=60,
                     json={"model": "agentroute-heavy", "messages": body["messages"]})
    assert r.status_code in (400, 401, 403)

    # an alias the profile does not map: a clean 400 in Anthropic's error shape, nothing sent upstream
    r = session.post(url + "/v1/messages", headers=gateway_headers(GATEWAY_TOKEN), timeout=60,
                     json=dict(body, model="agentroute-nosuchtier"))
    assert r.status_code == 400, r.text
    assert r.json()["type"] == "error"
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert "agentroute-nosuchtier" in r.json()["error"]["message"]
    assert len(upstream.requests()) == before

    # the official SDK, pointed at the sidecar with the gateway's token as its bearer token
    client = sdk.Anthropic(base_url=url, auth_token=GATEWAY_TOKEN, api_key=None, max_retries=0, timeout=60,
                           http_client=sdk.DefaultHttpxClient(trust_env=False))
    msg = client.messages.create(model="agentroute-heavy", max_tokens=2048, thinking=THINKING,
                                 messages=[{"role": "user", "content": "ping"}])
    assert [b.type for b in msg.content] == ["thinking", "text"]
    assert msg.content[0].thinking == "thinking about anthropic/claude-opus-4.5"
    assert msg.content[1].text == "pong from anthropic/claude-opus-4.5"
    assert msg.model == "agentroute-heavy"
    with client.messages.stream(model="agentroute-fast", max_tokens=2048, thinking=THINKING,
                                messages=[{"role": "user", "content": "ping"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "pong from deepseek/deepseek-v4-flash"
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].thinking == "thinking about deepseek/deepseek-v4-flash"
    count = client.messages.count_tokens(model="agentroute-balanced",
                                         messages=[{"role": "user", "content": "ping"}])
    assert count.input_tokens > 0
    with pytest.raises(sdk.BadRequestError) as exc:
        client.messages.create(model="agentroute-nosuchtier", max_tokens=16,
                               messages=[{"role": "user", "content": "ping"}])
    assert exc.value.status_code == 400
    stranger = sdk.Anthropic(base_url=url, auth_token=secrets.token_hex(32), api_key=None, max_retries=0,
                             timeout=60, http_client=sdk.DefaultHttpxClient(trust_env=False))
    with pytest.raises(sdk.APIStatusError) as exc:
        stranger.messages.create(model="agentroute-fast", max_tokens=16, messages=[{"role": "user", "content": "x"}])
    assert exc.value.status_code in (400, 401, 403)

    # what reached the stand-in for OpenRouter: the two SDK messages, with the OpenRouter key, thinking on
    sent = upstream.requests()[before:]
    assert [(r["model"], r["stream"]) for r in sent] == [("anthropic/claude-opus-4.5", False),
                                                         ("deepseek/deepseek-v4-flash", True)]
    assert all(r["authorization"] == f"Bearer {API_KEY}" for r in sent)
    assert all(r["body"].get("reasoning_effort") or r["body"].get("thinking") == THINKING for r in sent)
    # the token lives only in the 0600 litellm.yaml: not in the include, the state, the history
    for name in ("sidecar.conf", "state.json", "history.jsonl"):
        with open(os.path.join(sc.out, name)) as fh:
            assert GATEWAY_TOKEN not in fh.read(), name
