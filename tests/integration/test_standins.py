"""Quick checks of the stand-ins themselves (tests/support/fake_litellm.py, tests/support/fake_openrouter.py).

Every process started here is owned by the test: the stand-in runs in its own
session (so its process group is ours), its worker pids are recorded before
anything is killed, and cleanup kills exactly those pids and that group, pass
or fail. Waiting is done by polling with deadlines.
"""

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request


try:
    import psutil
except ImportError:  # fall back to the worker pid lines the stand-in prints
    psutil = None  # type: ignore[assignment]

HERE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "support")
sys.path.insert(0, HERE)

from fake_openrouter import FakeOpenRouter  # noqa: E402
from harness import free_port, poll  # noqa: E402

FAKE_LITELLM = os.path.join(HERE, "fake_litellm.py")
FAKE_OPENROUTER = os.path.join(HERE, "fake_openrouter.py")
MASTER_KEY = "sk-test"
API_KEY = "sk-or-v1-standin-key"

CONFIG = f"""model_list:
  - model_name: agentroute-fast
    litellm_params:
      model: openrouter/deepseek/deepseek-v4-flash
      api_key: {API_KEY}
general_settings:
  master_key: {MASTER_KEY}
"""


# -- helpers --

def get(port, path, headers=None, timeout=2.0):
    """(status, body) or (None, error) when nothing answers."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (OSError, http.client.HTTPException) as exc:
        return None, exc


def gone(pid) -> bool:
    """True when pid no longer runs (absent, or a zombie waiting for whoever adopted it)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] in "ZX"


def read(path) -> str:
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return ""


def kill_quietly(pid, sig=signal.SIGKILL):
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class Owned:
    """A stand-in process started in its own session, plus every pid it was seen to fork."""

    def __init__(self, argv, tmp_path, name):
        self.out = str(tmp_path / f"{name}.out")
        self.err = str(tmp_path / f"{name}.err")
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        self.pgid = self.proc.pid  # session leader: its pgid is its pid
        self.pids = {self.proc.pid}

    def stdout(self) -> str:
        return read(self.out)

    def stderr(self) -> str:
        return read(self.err)

    def cleanup(self):
        for pid in self.pids:
            kill_quietly(pid)
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        poll(lambda: all(gone(p) for p in self.pids), 10, what=f"pids {sorted(self.pids)} to exit")


def write_config(tmp_path, mode=None):
    cfg = tmp_path / "litellm.yaml"
    cfg.write_text(CONFIG)
    if mode is not None:
        (tmp_path / "fake_mode.json").write_text(json.dumps(mode))
    return str(cfg)


def litellm_argv(cfg, port, workers=None):
    argv = [sys.executable, FAKE_LITELLM, "--config", cfg, "--host", "127.0.0.1", "--port", str(port)]
    if workers is not None:
        argv += ["--num_workers", str(workers)]
    return argv + ["--some-unknown-flag", "ignored"]


def worker_pids_from(proc_out: str):
    return {int(m) for m in re.findall(r"fake litellm worker pid=(\d+)", proc_out)}


# -- fake_litellm --

def test_fake_litellm_workers_survive_parent_sigkill(tmp_path):
    port = free_port()
    cfg = write_config(tmp_path)
    owned = Owned(litellm_argv(cfg, port, workers=2), tmp_path, "litellm")
    try:
        status, body = poll(lambda: (lambda r: r if r[0] == 200 else None)(get(port, "/health/liveliness")),
                            20, what="health 200")
        assert b"I'm alive!" in body

        status, _ = get(port, "/v1/models")
        assert status == 401
        status, _ = get(port, "/v1/models", {"Authorization": "Bearer wrong"})
        assert status == 401
        status, body = get(port, "/v1/models", {"Authorization": f"Bearer {MASTER_KEY}"})
        assert status == 200
        assert json.loads(body) == {"object": "list", "data": [{"id": "agentroute-fast", "object": "model"}]}
        assert get(port, "/nope")[0] == 404

        # the worker pids, captured before the parent is killed
        poll(lambda: len(worker_pids_from(owned.stdout())) == 2, 10, what="two worker pid lines")
        workers = worker_pids_from(owned.stdout())
        if psutil is not None:
            children = {p.pid for p in psutil.Process(owned.proc.pid).children(recursive=True)}
            assert children == workers
        owned.pids |= workers
        assert f"listening on http://127.0.0.1:{port} workers=2 pid={owned.proc.pid}" in owned.stdout()

        os.kill(owned.proc.pid, signal.SIGKILL)
        owned.proc.wait(timeout=10)
        # orphaned workers keep the port and keep answering, like uvicorn's
        for _ in range(6):
            status, body = get(port, "/health/liveliness")
            assert status == 200, body
        assert not any(gone(w) for w in workers)

        for w in workers:
            kill_quietly(w, signal.SIGTERM)  # workers exit on SIGTERM
        poll(lambda: all(gone(w) for w in workers), 10, what="workers to exit on SIGTERM")
        poll(lambda: get(port, "/health/liveliness", timeout=0.5)[0] is None, 5, what="the port to be free")
    finally:
        owned.cleanup()


def test_fake_litellm_parent_sigterm_stops_workers(tmp_path):
    port = free_port()
    cfg = write_config(tmp_path, {"print_secrets": True})
    owned = Owned(litellm_argv(cfg, port, workers=2), tmp_path, "litellm")
    try:
        poll(lambda: get(port, "/health/liveliness")[0] == 200, 20, what="health 200")
        poll(lambda: len(worker_pids_from(owned.stdout())) == 2, 10, what="two worker pid lines")
        workers = worker_pids_from(owned.stdout())
        owned.pids |= workers
        assert f"api_key={API_KEY}" in owned.stdout()
        assert f"master_key={MASTER_KEY}" in owned.stdout()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/messages", method="POST",
                                     data=json.dumps({"model": "agentroute-fast", "max_tokens": 5}).encode(),
                                     headers={"x-api-key": MASTER_KEY, "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            msg = json.load(resp)
        assert msg["type"] == "message"
        assert msg["model"] == "agentroute-fast"
        assert msg["content"] == [{"type": "text", "text": "fake reply"}]

        os.kill(owned.proc.pid, signal.SIGTERM)
        assert owned.proc.wait(timeout=10) == 0
        poll(lambda: all(gone(w) for w in workers), 10, what="workers to exit with the parent")
    finally:
        owned.cleanup()


def test_fake_litellm_exit_at_start_fails_fast(tmp_path):
    port = free_port()
    cfg = write_config(tmp_path, {"exit_at_start": True})
    owned = Owned(litellm_argv(cfg, port, workers=2), tmp_path, "litellm")
    try:
        t0 = time.monotonic()
        rc = owned.proc.wait(timeout=10)
        assert rc != 0
        assert time.monotonic() - t0 < 10
        assert "fatal startup error" in owned.stderr()
        assert get(port, "/health/liveliness", timeout=0.5)[0] is None
    finally:
        owned.cleanup()


def test_fake_litellm_port_in_use_exits_like_uvicorn(tmp_path):
    cfg = write_config(tmp_path)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = held.getsockname()[1]
        owned = Owned(litellm_argv(cfg, port), tmp_path, "litellm")
        try:
            assert owned.proc.wait(timeout=10) == 1
            assert "address already in use" in owned.stderr()
            assert f"('127.0.0.1', {port})" in owned.stderr()
        finally:
            owned.cleanup()


# -- fake_openrouter --

def post_chat(base_url, model, stream):
    host, port = base_url.split("//")[1].split("/")[0].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        body = {"model": model, "messages": [{"role": "user", "content": "ping"}], "stream": stream}
        conn.request("POST", "/api/v1/chat/completions", body=json.dumps(body),
                     headers={"Authorization": "Bearer sk-or-v1-upstream", "Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type"), resp.read()
    finally:
        conn.close()


def test_fake_openrouter_records_stream_and_non_stream(tmp_path):
    record = tmp_path / "upstream.jsonl"
    fake = FakeOpenRouter(str(record)).start()
    try:
        assert fake.base_url == f"http://127.0.0.1:{fake.port}/api/v1"

        status, ctype, raw = post_chat(fake.base_url, "deepseek/deepseek-v4-flash", stream=False)
        assert status == 200
        assert ctype == "application/json"
        reply = json.loads(raw)
        assert reply["object"] == "chat.completion"
        assert reply["choices"][0]["message"]["content"] == "pong from deepseek/deepseek-v4-flash"
        assert reply["usage"]["total_tokens"] == 6

        status, ctype, raw = post_chat(fake.base_url, "anthropic/claude-opus-4.5", stream=True)
        assert status == 200
        assert ctype.startswith("text/event-stream")
        events = [line[len("data: "):] for line in raw.decode().split("\n\n") if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert all(c["object"] == "chat.completion.chunk" for c in chunks)
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
        assert text == "pong from anthropic/claude-opus-4.5"
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
        assert "usage" in chunks[-1]

        assert get(fake.port, "/api/v1/models")[0] == 200
        assert get(fake.port, "/elsewhere")[0] == 404

        seen = fake.requests()
        on_disk = [json.loads(line) for line in record.read_text().splitlines()]
        assert seen == on_disk
        assert [(r["model"], r["stream"]) for r in seen] == [
            ("deepseek/deepseek-v4-flash", False), ("anthropic/claude-opus-4.5", True)]
        assert all(r["authorization"] == "Bearer sk-or-v1-upstream" for r in seen)
        assert all(r["path"] == "/api/v1/chat/completions" for r in seen)
        assert seen[0]["body"]["messages"] == [{"role": "user", "content": "ping"}]
    finally:
        fake.stop()


def test_fake_openrouter_answers_500_for_a_model_it_cannot_serve(tmp_path):
    fake = FakeOpenRouter(str(tmp_path / "upstream.jsonl")).start()
    try:
        for stream in (False, True):
            status, ctype, raw = post_chat(fake.base_url, "unavailable/some-model", stream=stream)
            assert status == 500, ((status, ctype, raw))
            assert ctype == "application/json", ((status, ctype, raw))
            assert json.loads(raw)["error"]["message"] == "no endpoints found for unavailable/some-model"
        assert post_chat(fake.base_url, "deepseek/deepseek-v4-flash", stream=False)[0] == 200
        assert [(r["model"], r["stream"]) for r in fake.requests()] == [
            ("unavailable/some-model", False), ("unavailable/some-model", True), ("deepseek/deepseek-v4-flash", False)]
    finally:
        fake.stop()


def test_fake_openrouter_cli_prints_its_port(tmp_path):
    record = tmp_path / "cli.jsonl"
    owned = Owned([sys.executable, FAKE_OPENROUTER, "--port", "0", "--record", str(record)], tmp_path, "openrouter")
    try:
        first = poll(lambda: owned.stdout().split("\n")[0] if "\n" in owned.stdout() else None,
                     10, what="the listening line")
        m = re.fullmatch(r"listening on http://127\.0\.0\.1:(\d+)", first)
        assert m, first
        base = f"http://127.0.0.1:{int(m.group(1))}/api/v1"
        status, _, _ = post_chat(base, "fake/model", stream=False)
        assert status == 200
        poll(lambda: record.exists() and record.read_text().strip(), 5, what="the record line")
        assert json.loads(record.read_text().splitlines()[0])["model"] == "fake/model"
    finally:
        owned.cleanup()
