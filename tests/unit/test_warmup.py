"""The launcher's warm-up (``litellm_launch/warmup``), in-process: ASGI apps of the test's own, no server."""

import asyncio
import json
import re
import sys
import time
import types

import pytest

from sidecar_plugin.shell.litellm_launch import warmup

KEY = "sk-WARMUPTESTKEY0123456789abcdefghij"
CONFIG = f"""model_list:
- model_name: agentroute-balanced
  litellm_params: {{model: openrouter/anthropic/claude-sonnet-4.5}}
- model_name: agentroute-fast
  litellm_params: {{model: openrouter/deepseek/deepseek-v4-flash}}
general_settings: {{master_key: {KEY}}}
"""


@pytest.fixture
def config(tmp_path, monkeypatch):
    path = tmp_path / "litellm.yaml"
    path.write_text(CONFIG)
    monkeypatch.setenv("CONFIG_FILE_PATH", str(path))
    monkeypatch.delitem(sys.modules, "litellm", raising=False)  # another app unless a test puts LiteLLM there
    return path


class App:
    """An ASGI app that records each request and answers ``status`` (or runs ``act`` first)."""

    def __init__(self, status=200, act=None):
        self.status, self.act, self.seen = status, act, []

    async def __call__(self, scope, receive, send):
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        request = json.loads(body)
        self.seen.append((scope["path"], dict(scope["headers"]), request))
        if self.act is not None:
            await self.act(request)
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def test_two_requests_to_the_first_tier_with_the_master_key_and_the_mock(config, capsys):
    app = App()
    assert asyncio.run(warmup.warm(app, {})) is True
    assert [path for path, _, _ in app.seen] == ["/v1/messages", "/v1/messages/count_tokens"]
    assert {req["model"] for _, _, req in app.seen} == {"agentroute-balanced"}
    assert app.seen[0][2]["mock_response"] == "ok"
    assert all(req["no-log"] is True for _, _, req in app.seen)
    assert {headers[b"authorization"] for _, headers, _ in app.seen} == {b"Bearer " + KEY.encode()}
    out, err = capsys.readouterr()
    assert re.match(r"sidecar launcher: worker \d+ warmed up in \d+\.\d s\n$", out), out
    assert err == ""
    assert KEY not in out


def test_the_key_may_name_a_variable_and_agentroute_tiers_come_first(tmp_path, monkeypatch):
    path = tmp_path / "c.yaml"
    path.write_text("model_list:\n- model_name: other\n- model_name: agentroute-work\n"
                    "general_settings: {master_key: os.environ/THE_KEY}\n")
    monkeypatch.setenv("THE_KEY", KEY)
    assert warmup.settings(str(path)) == ("agentroute-work", KEY)
    path.write_text("general_settings: {}\n")
    assert warmup.settings(str(path)) == (None, "")


@pytest.mark.parametrize("app, said", [
    (App(status=500), "POST /v1/messages answered 500"),
    (App(act=lambda req: (_ for _ in ()).throw(RuntimeError(f"bad key {KEY}"))), "RuntimeError: bad key ***"),
], ids=["status", "exception"])
def test_a_failure_is_one_line_on_stderr_without_the_key(config, capsys, app, said):
    assert asyncio.run(warmup.warm(app, {})) is False
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1, err
    assert f"warm-up failed ({said}): serving cold" in err
    assert KEY not in err


def test_a_config_without_a_model_fails_the_warmup_not_the_worker(tmp_path, monkeypatch, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("general_settings: {}\n")
    monkeypatch.setenv("CONFIG_FILE_PATH", str(path))
    assert asyncio.run(warmup.warm(App(), {})) is False
    assert "no model in the config" in capsys.readouterr().err


def test_the_warmup_is_bounded(config, capsys, monkeypatch):
    monkeypatch.setattr(warmup, "BUDGET", 0.3)
    t0 = time.monotonic()
    assert asyncio.run(warmup.warm(App(act=lambda req: asyncio.sleep(3600)), {})) is False
    assert time.monotonic() - t0 < 3
    assert "warm-up not done in 0 s: serving cold" in capsys.readouterr().err


def fake_litellm(monkeypatch):
    """A ``litellm`` module as far as the warm-up sees it: its callback lists and ``CustomLogger``."""
    class CustomLogger:
        async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
            return None

    mod = types.ModuleType("litellm")
    for name in warmup.CALLBACK_LISTS:
        setattr(mod, name, [])
    logger = types.ModuleType("litellm.integrations.custom_logger")
    logger.CustomLogger = CustomLogger
    monkeypatch.setitem(sys.modules, "litellm", mod)
    monkeypatch.setitem(sys.modules, "litellm.integrations", types.ModuleType("litellm.integrations"))
    monkeypatch.setitem(sys.modules, "litellm.integrations.custom_logger", logger)
    return mod


class Metrics:
    """A metrics callback (as LiteLLM's Prometheus logger) that counts every request it is shown."""
    counted = 0


def litellm_like(mod):
    """An app that, as LiteLLM's proxy, strips the client's mock, runs the pre-call hooks, shows the callbacks the
    request and would call the upstream without a mock."""
    upstream = []

    async def act(request):
        request.pop("mock_response", None)
        for cb in list(mod.callbacks):
            if hasattr(cb, "async_pre_call_hook"):
                request = await cb.async_pre_call_hook(None, None, request, "anthropic_messages") or request
            if isinstance(cb, Metrics):
                cb.counted += 1
        if "mock_response" not in request and request.get("max_tokens"):
            upstream.append(request)
    return App(act=act), upstream


def test_under_litellm_the_calls_are_mocked_by_a_hook_and_counted_nowhere(config, monkeypatch):
    mod = fake_litellm(monkeypatch)
    metrics = Metrics()
    mod.callbacks.append(metrics)
    mod.success_callback.append("prometheus")
    lists = {name: getattr(mod, name) for name in warmup.CALLBACK_LISTS}
    app, upstream = litellm_like(mod)
    assert asyncio.run(warmup.warm(app, {})) is True
    assert upstream == []
    assert metrics.counted == 0
    assert mod.callbacks == [metrics]  # put back as they were, in the same lists
    assert mod.success_callback == ["prometheus"]
    assert all(getattr(mod, name) is lists[name] for name in warmup.CALLBACK_LISTS)
    app, upstream = litellm_like(mod)  # the traffic after it: counted, and it would reach the upstream
    asyncio.run(warmup.call(app, {}, "/v1/messages", {"model": "m", "max_tokens": 1, "mock_response": "x"}, []))
    assert metrics.counted == 1
    assert len(upstream) == 1


def test_the_callbacks_come_back_when_the_warmup_fails(config, monkeypatch, capsys):
    mod = fake_litellm(monkeypatch)
    mod.callbacks.append("prometheus")
    assert asyncio.run(warmup.warm(App(status=401), {})) is False
    assert mod.callbacks == ["prometheus"]
    assert "POST /v1/messages answered 401" in capsys.readouterr().err


def test_on_for_litellm_app_unless_turned_off_and_for_another_only_when_asked(monkeypatch):
    monkeypatch.delenv(warmup.SWITCH, raising=False)
    assert [warmup.wanted(a) for a in (warmup.LITELLM_APP, "light_app:app")] == [True, False]
    monkeypatch.setenv(warmup.SWITCH, "0")
    assert [warmup.wanted(a) for a in (warmup.LITELLM_APP, "light_app:app")] == [False, False]
    monkeypatch.setenv(warmup.SWITCH, "1")
    assert [warmup.wanted(a) for a in (warmup.LITELLM_APP, "light_app:app")] == [True, True]


def test_install_warms_after_the_app_started_and_before_uvicorn_serves(config, monkeypatch, capsys):
    from uvicorn import Config
    from uvicorn.lifespan.on import LifespanOn

    monkeypatch.setattr(LifespanOn, "startup", LifespanOn.startup)  # put back after the test
    monkeypatch.setenv(warmup.SWITCH, "1")
    events = []
    requests = App()

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                events.append(msg["type"])
                await send({"type": msg["type"] + ".complete"})
                if msg["type"] == "lifespan.shutdown":
                    return
        await requests(scope, receive, send)
        events.append(scope["path"])

    assert warmup.install("app:app") is True

    async def lifespan():
        on = LifespanOn(Config(app, lifespan="on"))
        await on.startup()
        events.append("started")  # uvicorn's Server.startup creates its servers after this
        await on.shutdown()

    asyncio.run(lifespan())
    assert events == ["lifespan.startup", "/v1/messages", "/v1/messages/count_tokens", "started",
                      "lifespan.shutdown"]
    assert "warmed up" in capsys.readouterr().out


def test_the_launcher_preimports_what_every_worker_would_load_only_for_litellm(tmp_path, monkeypatch):
    (tmp_path / "warmup_probe_module.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(warmup, "SHARED", ("warmup_probe_module", "warmup_no_such_module"))
    monkeypatch.delitem(sys.modules, "warmup_probe_module", raising=False)
    monkeypatch.setenv(warmup.SWITCH, "1")
    warmup.preimport("light_app:app")
    assert "warmup_probe_module" not in sys.modules
    monkeypatch.setenv(warmup.SWITCH, "0")
    warmup.preimport(warmup.LITELLM_APP)
    assert "warmup_probe_module" not in sys.modules
    monkeypatch.delenv(warmup.SWITCH)
    warmup.preimport(warmup.LITELLM_APP)  # the module that does not exist is passed over
    assert "warmup_probe_module" in sys.modules
