"""The demo's own helpers (tests/support/demo.py): the stand-in upstream it starts and stops, its profile, its failure words.

``make demo`` itself is run by hand (it takes port 4000 and a minute or two);
these check the pieces it is made of, each process cleaned up by its pid.
"""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import urllib.request

from harness import ROOT, poll, write_state_doc

from sidecar_plugin.core.profiles.agentroute import load_profile

DEMO = os.path.join(ROOT, "tests", "support", "demo.py")
_spec = importlib.util.spec_from_file_location("demo", DEMO)
assert _spec is not None
assert _spec.loader is not None
demo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(demo)


def chat(base_url):
    body = json.dumps({"model": "deepseek/deepseek-v4-flash", "messages": [{"role": "user", "content": "hi"}]})
    req = urllib.request.Request(base_url + "/chat/completions", data=body.encode(), method="POST",
                                 headers={"Content-Type": "application/json", "Authorization": "Bearer sk-or-x"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy
    with opener.open(req, timeout=10) as resp:
        return json.load(resp)["choices"][0]["message"]["content"]


def _kill(pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_the_stand_in_upstream_starts_once_answers_and_stops_by_pid(tmp_path):
    run = str(tmp_path / "run")
    os.makedirs(run)
    base = demo.upstream_start(run)
    pid = demo.upstream_running(run)["pid"]
    try:
        assert base.startswith("http://127.0.0.1:")
        assert base.endswith("/api/v1")
        assert chat(base) == "pong from deepseek/deepseek-v4-flash"
        assert demo.upstream_start(run) == base
        assert demo.upstream_running(run)["pid"] == pid  # kept, not twice
        assert demo.upstream_stop(run) == pid
        assert not os.path.exists(f"/proc/{pid}") or not demo._ours(pid)
        assert demo.upstream_running(run) is None
        assert demo.upstream_stop(run) is None
    finally:
        _kill(pid)


def test_make_stop_ends_a_stand_in_another_process_started(tmp_path):
    """``make demo`` starts it and exits; ``make stop`` is another process: the stand-in is not its child."""
    run = str(tmp_path / "run")
    res = subprocess.run([sys.executable, DEMO, "upstream-start", "--run", run], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    pid = json.load(open(os.path.join(run, "upstream.pid")))["pid"]
    try:
        assert chat(res.stdout.strip()) == "pong from deepseek/deepseek-v4-flash"
        bin_dir = os.path.dirname(sys.executable)
        res = subprocess.run([sys.executable, DEMO, "stop", "--run", run, "--conf", str(tmp_path / "none.conf"),
                              "--bin", bin_dir], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stdout + res.stderr
        assert res.stdout.splitlines() == ["supervisord is not running", f"the stand-in upstream (pid {pid}) is stopped"]
        poll(lambda: not demo._ours(pid), 10, what="the stand-in gone")
    finally:
        _kill(pid)


def test_the_demo_profile_is_the_example_sent_to_the_stand_in(tmp_path):
    path = demo.demo_profile(str(tmp_path), "http://127.0.0.1:5999/api/v1")
    mine, example = load_profile(path), load_profile(os.path.join(ROOT, demo.EXAMPLE))
    assert mine.api_base == "http://127.0.0.1:5999/api/v1"
    assert example.api_base is None
    assert (mine.models, mine.port, mine.name) == (example.models, example.port, example.name)


def _state(tmp_path, **fields):
    return write_state_doc(tmp_path / "state.json", **{"log_tail": ["ERROR: the last words"], **fields})


def test_a_failed_wait_says_why_where_and_what_to_change(tmp_path):
    said = "\n".join(demo.explain(_state(tmp_path, error="did not become healthy within 20 s"), "run/litellm.log"))
    assert "why:  did not become healthy within 20 s" in said
    assert "log:  run/litellm.log" in said
    assert "ERROR: the last words" in said
    assert "HEALTH_TIMEOUT=" in said
    assert "make stop" in said
    said = "\n".join(demo.explain(_state(tmp_path, error="exited unexpectedly (pid 5)", port_holder="pid 9 nginx"),
                                  "run/litellm.log"))
    assert "free the port (held by pid 9 nginx)" in said
    said = "\n".join(demo.explain(str(tmp_path / "missing.json"), "run/litellm.log"))
    assert "why:  its state is stopped" in said
