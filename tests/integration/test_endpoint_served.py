"""The gateway's URL and key from a real sidecar: served, an older state file, no state file or supervisord,
a provided key kept and a fleet's key.

tests/unit/test_endpoint.py holds the URL and the key file's rules, in-process.
"""

import json
import os
import time

import pytest
import requests

from harness import API_KEY, MASTER_KEY, free_port, poll, run_cli
from sidecar_plugin.shell.files.statefile import write_state
from sidecar_plugin.client import Sidecar, state_dict


GENERATE = {"OPENROUTER_API_KEY": API_KEY, "AGENTROUTE_MASTER_KEY": ""}


def old_state(path, port=4123, host="127.0.0.1"):
    """A state file as listeners wrote it before base_url and key_file existed."""
    now = time.time()
    write_state(path, {"schema": 1, "program": "agentroute-sidecar", "state": "running", "since": now,
                       "updated_at": now, "heartbeat_at": now, "pid": None, "port": port, "host": host,
                       "supervisor_state": "RUNNING", "health": {}, "error": None, "log_tail": [],
                       "listener_pid": os.getpid()})


def gateway_session():
    s = requests.Session()
    s.trust_env = False
    return s


def test_an_older_state_file_still_gives_the_base_url(tmp_path):
    path = str(tmp_path / "state.json")
    old_state(path, host="0.0.0.0")
    assert state_dict(path)["base_url"] == "http://127.0.0.1:4123"
    sc = Sidecar(state_file=path, server_url="unix://" + str(tmp_path / "none.sock"))
    assert sc.base_url == "http://127.0.0.1:4123"
    assert sc.key_file() is None  # not published, and no supervisord to ask
    res = run_cli("endpoint", "--state-file", path, "-s", "unix://" + str(tmp_path / "none.sock"))
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0] == "base_url: http://127.0.0.1:4123"


def test_endpoint_without_a_state_file_or_supervisord_is_one_line_exit_4(tmp_path):
    res = run_cli("endpoint", "--state-file", str(tmp_path / "nope.json"), "-s",
                  "unix://" + str(tmp_path / "none.sock"))
    assert res.returncode == 4
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("endpoint unknown: ")
    assert "Traceback" not in res.stderr


@pytest.mark.integration
@pytest.mark.oldest  # tests/integration/test_oldest.py says why
def test_gateway_finds_url_and_key_and_is_served(make_sidecar):
    sc = make_sidecar()
    # render again without a provided key: render generates one into master.key
    res = run_cli("render", *sc.render_args, env=GENERATE)
    assert res.returncode == 0, res.stderr
    key_path = os.path.join(sc.out, "master.key")
    key = open(key_path).read().strip()
    sc.start_supervisord()
    url = f"http://127.0.0.1:{sc.port}"

    # the state file names both, and no secret
    doc = json.load(open(sc.state_file))
    assert doc["base_url"] == url
    assert doc["key_file"] == key_path
    assert key not in open(sc.state_file).read()

    # sidecar-plugin endpoint, found through supervisord (no --state-file), plain and JSON
    res = run_cli("endpoint", "-s", "unix://" + sc.sock)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [f"base_url: {url}", f"key_file: {key_path}"]
    res = run_cli("endpoint", "--json", "-s", "unix://" + sc.sock)
    assert json.loads(res.stdout) == {"program": "agentroute-sidecar", "base_url": url, "key_file": key_path}
    assert key not in res.stdout + res.stderr

    # the module, status --json and the XML-RPC namespace agree
    c = Sidecar(program=sc.program, server_url="unix://" + sc.sock)
    assert c.base_url == url
    assert c.key_file() == key_path
    res = run_cli("status", "--json", "-s", "unix://" + sc.sock)
    assert json.loads(res.stdout)["base_url"] == url
    st = sc.rpc().sidecar.getState(sc.program)
    assert st["base_url"] == url
    assert st["key_file"] == key_path

    # the gateway's side: read the key from the file it was told, send it as a bearer token
    with open(c.key_file()) as fh:
        bearer = {"Authorization": f"Bearer {fh.read().strip()}", "anthropic-version": "2023-06-01"}
    s = gateway_session()
    body = {"model": "agentroute-fast", "max_tokens": 16, "messages": [{"role": "user", "content": "ping"}]}
    r = s.post(c.base_url + "/v1/messages", json=body, headers=bearer, timeout=10)
    assert r.status_code == 200
    assert r.json()["type"] == "message"
    r = s.post(c.base_url + "/v1/messages/count_tokens", json={k: body[k] for k in ("model", "messages")},
               headers=bearer, timeout=10)
    assert r.status_code == 200
    assert r.json()["input_tokens"] > 0
    r = s.post(c.base_url + "/v1/messages", json=dict(body, model="agentroute-none"), headers=bearer, timeout=10)
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"
    r = s.post(c.base_url + "/v1/messages/count_tokens", json=body, timeout=10,
               headers={"Authorization": "Bearer " + "0" * 64})
    assert r.status_code == 401


@pytest.mark.integration
def test_a_provided_key_is_kept_in_litellm_yaml_and_the_fleet_key_in_out_dir(make_sidecar, make_fleet):
    sc = make_sidecar()  # rendered with AGENTROUTE_MASTER_KEY set
    sc.start_supervisord()
    config = os.path.join(sc.out, "litellm.yaml")
    poll(lambda: json.load(open(sc.state_file)).get("key_file") == config, 10, what="key_file in the state")
    res = run_cli("endpoint", "--state-file", sc.state_file, "-s", "unix://" + sc.sock)
    assert res.stdout.splitlines() == [f"base_url: http://127.0.0.1:{sc.port}", f"key_file: {config}"]
    assert MASTER_KEY not in res.stdout + res.stderr

    base = free_port()
    # AgentRoute's names: a space, a non-ASCII letter (supervisord reads the include, comments and all)
    fl = make_fleet(profiles={"my work": {"models": {"fast": "x/y"}}, "Über Team": {"models": {"fast": "x/y"}}},
                    base_port=base, metrics=False)
    res = run_cli("render", *fl.render_args, env=GENERATE)
    assert res.returncode == 0, res.stderr
    fl.start_supervisord(wait_state="running")
    res = run_cli("endpoint", "--json", "-s", "unix://" + fl.sock)
    assert res.returncode == 0, res.stderr
    found = {d["program"]: d for d in json.loads(res.stdout)}
    assert sorted(found) == ["agentroute-Uber-Team", "agentroute-my-work"]
    assert {fl.state_of(p).state.value for p in found} == {"running"}
    assert {d["key_file"] for d in found.values()} == {os.path.join(fl.out, "master.key")}
    assert {d["base_url"] for d in found.values()} == {f"http://127.0.0.1:{base}", f"http://127.0.0.1:{base + 1}"}
