"""Warm a new worker before it accepts: its own ASGI app called in-process, once per cold path.

LiteLLM imports and initialises much of itself lazily, on a worker's first
``/v1/messages`` and first ``count_tokens`` (1.3 to 4.8 s measured): without
this, the first requests a fresh worker takes after a restart, an apply, a
replacement or a drain wait that long. Each worker, once its app's startup is
done and before its server accepts on the shared socket (uvicorn's
``Server.startup``: the lifespan first, then the listening sockets; its
supervisor counts a worker ready only after both, and the tree's private
health socket is served from then on too), sends its own app one Anthropic
``POST /v1/messages`` to the config's first tier with LiteLLM's
``mock_response`` (no upstream call) and one ``POST /v1/messages/count_tokens``,
with the config's master key (never printed). LiteLLM's callbacks (its
Prometheus metrics among them) are emptied meanwhile and the requests say
``no-log``: they count nowhere. At most ``BUDGET`` seconds in all; a warm-up
that fails or overruns says so in one line on stderr and the worker serves
cold. ``SIDECAR_WARMUP``: ``0`` off, ``1`` on for any app; unset, on for
LiteLLM's proxy app only. What every worker's warm-up would load alike
(LiteLLM's tokenizer) the launcher imports before it forks (``preimport``):
shared, not a copy per worker. Imports nothing of sidecar_plugin.
"""

import asyncio
import contextlib
import importlib
import json
import os
import sys
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

BUDGET = 20.0  # seconds the whole warm-up may take
SWITCH = "SIDECAR_WARMUP"
LITELLM_APP = "litellm.proxy.proxy_server:app"
# LiteLLM's callback lists (module attributes): emptied while the warm-up runs, then put back as they were
CALLBACK_LISTS = ("callbacks", "success_callback", "failure_callback", "input_callback", "service_callback",
                  "audit_log_callbacks", "_async_success_callback", "_async_failure_callback", "_async_input_callback")
Headers = List[Tuple[bytes, bytes]]
SHARED = ("litellm.litellm_core_utils.default_encoding",)  # what preimport loads before the fork
MOCKED = {"mock_response": "ok", "no-log": True}  # LiteLLM answers without an upstream call and logs nowhere


class WarmupFailed(Exception):
    """Why the warm-up did not complete: a request's status said, never its body (it may echo the key)."""


def wanted(app: str) -> bool:
    value = os.environ.get(SWITCH, "")
    return value == "1" or (value != "0" and app == LITELLM_APP)


def install(app: str) -> bool:
    """Warm every worker uvicorn starts from now on (forked: they inherit the patch); False when off or not possible."""
    if not wanted(app):
        return False
    try:
        from uvicorn.lifespan.on import LifespanOn
    except ImportError:
        return False
    startup = LifespanOn.startup

    async def warmed(self: Any) -> None:
        await startup(self)
        if not self.should_exit:  # the app started: warm it before uvicorn's server accepts
            await warm(self.config.loaded_app, getattr(self, "state", {}))  # an older uvicorn: no lifespan state

    LifespanOn.startup = warmed
    return True


def preimport(app: str) -> None:
    """Import in the launcher, before it forks the workers, what the warm-up would load in each (shared then).

    LiteLLM's tokenizer (``default_encoding``: tiktoken's, from its own
    install, no download) is 35 of the 80 MB a worker grows by at its first
    requests; imported here, every worker shares its pages. Another LiteLLM
    without it: nothing.
    """
    if wanted(app) and app == LITELLM_APP:
        for name in SHARED:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 (each worker loads what it needs at its warm-up)
                continue


def settings(path: str) -> Tuple[Optional[str], str]:
    """(the first tier's alias, the master key) of LiteLLM's config at ``path``; ``os.environ/NAME`` resolved."""
    import yaml

    with open(path) as fh:
        doc = yaml.safe_load(fh) or {}
    names = [str(m.get("model_name")) for m in doc.get("model_list") or [] if isinstance(m, dict)
             and m.get("model_name")]
    tiers = [n for n in names if n.startswith("agentroute-")] or names
    key = str((doc.get("general_settings") or {}).get("master_key") or "")
    if key.startswith("os.environ/"):
        key = os.environ.get(key[len("os.environ/"):], "")
    return (tiers[0] if tiers else None), key


def calls(alias: str) -> List[Tuple[str, Dict[str, Any]]]:
    """The requests the warm-up sends: what the gateway sends first, answered by LiteLLM's mock, logged nowhere."""
    messages = [{"role": "user", "content": "warm-up"}]
    return [("/v1/messages", dict(MOCKED, model=alias, max_tokens=16, messages=messages)),
            ("/v1/messages/count_tokens", {"model": alias, "messages": messages, "no-log": True})]


async def call(app: Any, state: Dict[str, Any], path: str, body: Dict[str, Any], headers: Headers) -> int:
    """One request to the ASGI ``app`` in this process, as uvicorn would pass it; return its status (0: none)."""
    raw = json.dumps(body).encode()
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "headers": headers + [(b"content-length", str(len(raw)).encode())],
             "client": ("127.0.0.1", 0), "server": ("127.0.0.1", 0), "state": dict(state)}
    status: List[int] = []
    answered = asyncio.Event()
    pending = [{"type": "http.request", "body": raw, "more_body": False}]

    async def receive() -> Dict[str, Any]:
        if pending:
            return pending.pop()
        await answered.wait()
        return {"type": "http.disconnect"}

    async def send(message: Dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(int(message["status"]))
        elif message["type"] == "http.response.body" and not message.get("more_body"):
            answered.set()

    await app(scope, receive, send)
    answered.set()
    return status[0] if status else 0


def mocking_hook() -> Any:
    """A LiteLLM proxy hook that has each request it sees answered by LiteLLM's mock and logged nowhere.

    The proxy strips a client's ``mock_response`` (unless its key's metadata
    allows it); a pre-call hook's data is what LiteLLM calls with, so the
    warm-up's ``/v1/messages`` never reaches the upstream.
    """
    from litellm.integrations.custom_logger import CustomLogger

    class Mocking(CustomLogger):
        seen = 0

        async def async_pre_call_hook(self, user_api_key_dict: Any, cache: Any, data: Dict[str, Any],
                                      call_type: Any) -> Dict[str, Any]:
            self.seen += 1
            data.update(MOCKED)
            return data

    return Mocking()


@contextlib.contextmanager
def uncounted(hook: Any) -> Iterator[None]:
    """LiteLLM's callback lists emptied in place (their holders see it) but for ``hook``; put back afterwards."""
    litellm = sys.modules.get("litellm")
    lists = {name: getattr(litellm, name) for name in CALLBACK_LISTS if isinstance(getattr(litellm, name, None), list)}
    if "callbacks" not in lists:
        raise WarmupFailed("this LiteLLM has no litellm.callbacks")
    saved = {name: list(items) for name, items in lists.items()}
    try:
        for items in lists.values():
            items.clear()
        lists["callbacks"].append(hook)
        yield
    finally:
        for name, items in lists.items():
            items[:] = saved[name]


async def exercise(app: Any, state: Dict[str, Any]) -> None:
    alias, key = settings(os.environ.get("CONFIG_FILE_PATH", ""))
    if alias is None:
        raise WarmupFailed("no model in the config")
    headers: Headers = [(b"content-type", b"application/json"), (b"anthropic-version", b"2023-06-01")]
    if key:
        headers.append((b"authorization", b"Bearer " + key.encode()))
    hook = mocking_hook() if "litellm" in sys.modules else None  # None: another app (it sees the body's mock)
    with uncounted(hook) if hook is not None else contextlib.nullcontext():
        for path, body in calls(alias):
            status = await call(app, state, path, body, headers)
            if status != 200:
                raise WarmupFailed("POST %s answered %s" % (path, status or "nothing"))
        await asyncio.sleep(0)  # what the answers scheduled (LiteLLM's logging tasks) starts while nothing counts
    if hook is not None and not hook.seen:
        raise WarmupFailed("LiteLLM ran no pre-call hook: /v1/messages was not mocked")


def said(exc: BaseException) -> str:
    """The failure in one short line, the master key masked should the message hold it."""
    text = str(exc) if isinstance(exc, WarmupFailed) else "%s: %s" % (type(exc).__name__, exc)
    try:
        key = settings(os.environ.get("CONFIG_FILE_PATH", ""))[1]
    except Exception:  # noqa: BLE001 (only said)
        key = ""
    if key:
        text = text.replace(key, "***")
    return " ".join(text.split())[:200]


async def warm(app: Any, state: Dict[str, Any]) -> bool:
    """Warm ``app`` (bounded by ``BUDGET``); on any failure say it on stderr and return False (the worker serves)."""
    started = time.monotonic()
    try:
        await asyncio.wait_for(exercise(app, state), BUDGET)
    except asyncio.TimeoutError:
        say(2, "sidecar launcher: worker %d: warm-up not done in %.0f s: serving cold" % (os.getpid(), BUDGET))
        return False
    except Exception as exc:  # noqa: BLE001 (a warm-up never keeps a worker from serving)
        say(2, "sidecar launcher: worker %d: warm-up failed (%s): serving cold" % (os.getpid(), said(exc)))
        return False
    say(1, "sidecar launcher: worker %d warmed up in %.1f s" % (os.getpid(), time.monotonic() - started))
    return True


def say(fd: int, line: str) -> None:
    """Write ``line`` with its newline in one write: the workers share the log's pipe, and print() writes the
    newline apart, so another worker's line could land between them."""
    stream = sys.stderr if fd == 2 else sys.stdout
    stream.flush()
    stream.write(line + "\n")
    stream.flush()
