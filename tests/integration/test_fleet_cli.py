"""Fleets through the CLI as a process: the layout, the group and one listener; what a fleet refuses; a
listener without a sidecar.

tests/unit/test_fleet.py holds the fleet's rules, in-process.
"""

import configparser
import json
import os
import shlex
import stat

import pytest

from harness import API_KEY, KEYS as ENV, MASTER_KEY, fake_binary, run_cli
from sidecar_plugin.core.state.discovery import sidecars


def render_fleet(tmp_path, *extra, profiles=None):
    folder = tmp_path / "profiles"
    folder.mkdir(exist_ok=True)
    for name, text in (profiles or {"work": "port: 4100\n", "play": ""}).items():
        (folder / f"{name}.yaml").write_text(f"name: {name}\n{text}models:\n  fast: deepseek/deepseek-v4-flash\n")
    out = tmp_path / "out"
    res = run_cli("render", "--profile", str(folder), "--out-dir", str(out), "--port", "4200",
                  "--binary", fake_binary(str(tmp_path)), *extra, env=ENV)
    return res, out


def test_fleet_render_layout_sections_and_one_listener(tmp_path):
    res, out = render_fleet(tmp_path, "--metrics-file", str(tmp_path / "m.prom"))
    assert res.returncode == 0, res.stderr
    for program in ("agentroute-play", "agentroute-work"):
        assert stat.S_IMODE(os.stat(out / program / "litellm.yaml").st_mode) == 0o600
        assert stat.S_IMODE(os.stat(out / program / "litellm.log").st_mode) == 0o600
    cp = configparser.RawConfigParser()
    cp.read(out / "sidecar.conf")
    # each an [fcgi-program] (supervisord holds its port), its own group: a [group:] would run it without
    assert not [s for s in cp.sections() if s.startswith(("group:", "program:"))]
    assert [s for s in cp.sections() if s.startswith("eventlistener:")] == ["eventlistener:agentroute-health"]
    assert cp.get("fcgi-program:agentroute-play", "socket") == "tcp://127.0.0.1:4200"
    assert cp.get("fcgi-program:agentroute-work", "socket") == "tcp://127.0.0.1:4100"
    command = cp.get("eventlistener:agentroute-health", "command")
    # what the listener watches is found back from its command, as clients and sidecar.getState do
    found = sidecars([command])
    assert sorted(found) == ["agentroute-play", "agentroute-work"]
    assert found["agentroute-work"]["state-file"] == str(out / "agentroute-work" / "state.json")
    assert found["agentroute-work"]["group"] == "agentroute-work"
    assert "--group" not in shlex.split(command)
    assert found["agentroute-play"]["port"] == "4200"
    assert "--metrics-file" in shlex.split(command)
    text = (out / "sidecar.conf").read_text()
    assert API_KEY not in text
    assert MASTER_KEY not in text
    # byte-identical on a second render
    before = {p: (out / p).read_bytes() for p in ("sidecar.conf", "agentroute-work/litellm.yaml")}
    res, _ = render_fleet(tmp_path, "--metrics-file", str(tmp_path / "m.prom"))
    assert "changed" not in res.stdout.replace("unchanged", "")
    assert before == {p: (out / p).read_bytes() for p in before}


def test_a_fleet_whose_ports_litellm_binds_is_one_group(tmp_path):
    # supervisord's tcp:// sockets are IPv4: on an IPv6 host LiteLLM binds each port, the [program]s in one group
    res, out = render_fleet(tmp_path, "--host", "::1")
    assert res.returncode == 0, res.stderr
    assert "not held by supervisord" in res.stderr, res.stderr
    cp = configparser.RawConfigParser()
    cp.read(out / "sidecar.conf")
    assert cp.get("group:agentroute", "programs") == "agentroute-play,agentroute-work"
    assert "--port 4100" in cp.get("program:agentroute-work", "command")
    assert not [s for s in cp.sections() if s.startswith("fcgi-program:")]
    found = sidecars([cp.get("eventlistener:agentroute-health", "command")])
    assert found["agentroute-work"]["group"] == "agentroute"


@pytest.mark.parametrize("extra, message", [
    (["--program", "x"], "--program: names one sidecar"),
    (["--state-file", "/tmp/s.json"], "--state-file: names one sidecar"),
])
def test_fleet_refuses_single_sidecar_options(tmp_path, extra, message):
    res, out = render_fleet(tmp_path, *extra)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith(message), res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_fleet_refuses_duplicate_names_and_ports(tmp_path):
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "a.yaml").write_text("name: same\nmodels: {fast: x/y}\n")
    (folder / "b.yaml").write_text("name: same\nmodels: {fast: x/y}\n")
    res = run_cli("render", "--profile", str(folder), "--out-dir", str(tmp_path / "o"),
                  "--binary", fake_binary(str(tmp_path)), env=ENV)
    assert res.returncode == 2
    assert "b.yaml: name: 'same' is also the name of" in res.stderr
    res, _ = render_fleet(tmp_path, profiles={"a": "port: 4300\n", "b": "port: 4300\n"})
    assert res.returncode == 2
    assert "port: 4300 is also the port of profile 'a'" in res.stderr


def test_listen_without_a_sidecar_refuses_with_one_json_line():
    res = run_cli("listen", "--sidecar", "agentroute-x=4000")  # a fleet entry needs --root
    assert res.returncode == 78
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["msg"].startswith("refusing to run: --sidecar")
