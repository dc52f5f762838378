"""A stand-in for LiteLLM's proxy *app*, for the sidecar's launcher: ``SIDECAR_APP=asgi_standin:app``.

tests/fake_litellm.py stands in for LiteLLM's command; this stands in for
what the launcher serves (``litellm.proxy.proxy_server:app``), so the launcher
itself, uvicorn's workers on supervisord's socket included, runs in the
integration tests without LiteLLM's 7-60 s start. It reads the config the
launcher names (``CONFIG_FILE_PATH``) as LiteLLM does: the master key and the
aliases. It answers ``/health/liveliness`` and ``/v1/messages`` (with
``"stream": true``, server-sent events over ``stream_seconds``, ending with
``message_stop``); an alias it does not serve gets LiteLLM's 400.
"""

import asyncio
import json
import os

import yaml


def _config():
    with open(os.environ["CONFIG_FILE_PATH"]) as fh:
        cfg = yaml.safe_load(fh) or {}
    key = (cfg.get("general_settings") or {}).get("master_key", "")
    return key, {e.get("model_name") for e in cfg.get("model_list") or []}


MASTER_KEY, MODELS = _config()


async def _read(receive):
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            return body


async def _send(send, status, body, ctype=b"application/json"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", ctype), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


async def _stream(send, model, seconds):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    events = max(2, int(seconds * 4))
    await send({"type": "http.response.body", "more_body": True,
                "body": b'event: message_start\ndata: {"type": "message_start", "message": {"model": '
                        + json.dumps(model).encode() + b"}}\n\n"})
    for _ in range(events):
        await asyncio.sleep(seconds / events)
        await send({"type": "http.response.body", "more_body": True,
                    "body": b'event: content_block_delta\ndata: {"type": "content_block_delta", '
                            b'"delta": {"type": "text_delta", "text": "x"}}\n\n'})
    await send({"type": "http.response.body", "body": b'event: message_stop\ndata: {"type": "message_stop"}\n\n'})


def _authorized(scope):
    headers = dict(scope.get("headers") or [])
    auth = headers.get(b"authorization", b"").decode("latin-1")
    return auth == f"Bearer {MASTER_KEY}" or headers.get(b"x-api-key", b"").decode("latin-1") == MASTER_KEY


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/health/liveliness":
        return await _send(send, 200, b'"I\'m alive!"')
    raw = await _read(receive)
    if scope["method"] != "POST" or path != "/v1/messages":
        return await _send(send, 404, {"error": "not found"})
    if not _authorized(scope):
        return await _send(send, 401, {"error": {"message": "Authentication Error"}})
    try:
        body = json.loads(raw)
    except ValueError:
        body = {}
    model = body.get("model") if isinstance(body, dict) else None
    if model not in MODELS:
        return await _send(send, 400, {"error": {"message": f"Invalid model name passed in model={model}"}})
    if body.get("stream"):
        return await _stream(send, model, float(body.get("stream_seconds") or 1.0))
    return await _send(send, 200, {"id": "msg_standin", "type": "message", "role": "assistant", "model": model,
                                   "content": [{"type": "text", "text": "pong"}], "stop_reason": "end_turn",
                                   "usage": {"input_tokens": 1, "output_tokens": 1}})
