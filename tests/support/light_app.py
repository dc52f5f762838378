"""A light ASGI app the sidecar's real launcher serves in place of LiteLLM's (``SIDECAR_APP=light_app:app``).

So the integration tests exercise the launcher itself (uvicorn's supervisor,
the preload, the private health and control sockets, a worker replaced on the
listener's request) without LiteLLM's 7 to 60 s start. It answers what the
gateway sends (``/v1/messages``, plain and streamed over ``stream_seconds``,
behind the master key of the config) and ``/health/liveliness``.

Its memory misbehaves as ``fake_mode.json`` beside the config says:
``grow_mb`` MB kept by each worker per request (pages touched, so PSS grows),
at most ``grow_cap_mb`` in all (bounded); ``born_mb`` MB taken at startup by
a worker born after the first ``NUM_WORKERS`` (a replacement born over budget).
Births are counted in ``light_births`` beside the config (one byte each).
``import_seconds`` makes its import take that long (a slow launcher start).
The launcher's warm-up (``SIDECAR_WARMUP=1``: its requests carry
``mock_response``) is written to ``light_warm`` beside the config, a line
``warm <pid> <path>`` each, and a request of the traffic that a worker serves
before both warm-up requests reached it, ``cold <pid>`` (once); ``warm_status`` in
the mode answers the warm-up with that status (a warm-up that fails).
A request whose body holds ``"hang_loop": S`` blocks the event loop of the
worker serving it for S seconds (at most 600): a hung worker; ``"burn_loop": S``
keeps it computing for S seconds (at most 60): a busy one.
"""

import asyncio
import json
import os
from typing import List

import yaml

HELD: List[bytearray] = []  # what this worker keeps, as a leak would
PAGE = 4096


def _folder():
    return os.path.dirname(os.path.abspath(os.environ.get("CONFIG_FILE_PATH", "litellm.yaml")))


def _mode():
    try:
        with open(os.path.join(_folder(), "fake_mode.json")) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


def _key():
    try:
        with open(os.environ.get("CONFIG_FILE_PATH", "")) as fh:
            return ((yaml.safe_load(fh) or {}).get("general_settings") or {}).get("master_key", "")
    except OSError:
        return ""


def _import_delay():
    """``import_seconds`` of the mode: this import takes that long (as LiteLLM's does: a slow launcher start)."""
    import time

    time.sleep(min(float(_mode().get("import_seconds", 0)), 120))


_import_delay()


def take(mb):
    """Keep ``mb`` MB more, every page written (untouched pages would not count in PSS)."""
    cap = float(_mode().get("grow_cap_mb", 256))
    mb = min(mb, cap - sum(len(b) for b in HELD) / 1048576.0)
    if mb <= 0:
        return
    block = bytearray(int(mb * 1048576))
    block[::PAGE] = b"\x01" * len(range(0, len(block), PAGE))
    HELD.append(block)


def born():
    """Count this worker's birth; a replacement (born after the first NUM_WORKERS) may start big."""
    fd = os.open(os.path.join(_folder(), "light_births"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, b".")
        index = os.fstat(fd).st_size
    finally:
        os.close(fd)
    if index > int(os.environ.get("NUM_WORKERS", "1")) and _mode().get("born_mb"):
        take(float(_mode()["born_mb"]))


async def _body(receive):
    data = b""
    while True:
        msg = await receive()
        data += msg.get("body", b"")
        if not msg.get("more_body"):
            return data


async def _send(send, status, body, ctype=b"application/json"):
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", ctype)]})
    await send({"type": "http.response.body", "body": body})


WARMED: List[str] = []  # the warm-up's paths this worker served
NOTED: List[bool] = []  # its first request served cold, once noted


def _note(line):
    with open(os.path.join(_folder(), "light_warm"), "a") as fh:
        fh.write(line + "\n")


async def _messages(scope, receive, send):
    headers = dict(scope["headers"])
    given = headers.get(b"x-api-key", b"") or headers.get(b"authorization", b"").replace(b"Bearer ", b"")
    request = json.loads(await _body(receive) or b"{}")
    if given.decode() != _key():
        return await _send(send, 401, b'{"error": "bad key"}')
    if "mock_response" in request or scope["path"].endswith("/count_tokens") and request.get("no-log"):
        WARMED.append(scope["path"])
        _note("warm %d %s" % (os.getpid(), scope["path"]))
        status = int(_mode().get("warm_status", 200))
        return await _send(send, status, b'{"input_tokens": 3}' if status == 200 else b'{"error": "no"}')
    if len(set(WARMED)) < 2 and not NOTED:  # once per worker: the first request it served cold
        NOTED.append(True)
        _note("cold %d" % os.getpid())
    take(float(_mode().get("grow_mb", 0)))
    if request.get("hang_loop"):  # this worker's event loop blocks (bounded): alive, its siblings serving
        import time

        print("light app worker %d: hanging its loop" % os.getpid(), flush=True)
        time.sleep(min(float(request["hang_loop"]), 600))
    if request.get("burn_loop"):  # this worker's event loop computes (bounded): busy, not hung
        import time

        print("light app worker %d: burning its loop" % os.getpid(), flush=True)
        until = time.monotonic() + min(float(request["burn_loop"]), 60)
        while time.monotonic() < until:
            sum(i * i for i in range(10000))
    if not request.get("stream"):
        return await _send(send, 200, json.dumps({"type": "message", "content": [
            {"type": "text", "text": "pong from %d" % os.getpid()}]}).encode())
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    seconds, steps = float(request.get("stream_seconds") or 0.5), 10
    for _ in range(steps):
        await send({"type": "http.response.body", "body": b"event: content_block_delta\ndata: {}\n\n",
                    "more_body": True})
        await asyncio.sleep(seconds / steps)
    await send({"type": "http.response.body", "body": b"event: message_stop\ndata: {}\n\n"})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                born()
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["path"] == "/health/liveliness":
        return await _send(send, 200, b'"I\'m alive!"')
    if scope["path"] in ("/v1/messages", "/v1/messages/count_tokens") and scope["method"] == "POST":
        return await _messages(scope, receive, send)
    await _send(send, 404, b'{"error": "not found"}')
