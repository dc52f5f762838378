"""AgentRoute's saved profiles through the CLI as a process: render one, a new one refused, a folder as a fleet.

tests/unit/test_agentroute_profiles.py holds the files byte for byte and the names they give, in-process.
"""

import configparser
import os
import re
from harness import fake_binary, run_cli
from test_agentroute_profiles import ENV, MAPPED_PROFILE, NEW_PROFILE, saved


def test_render_of_agentroute_profiles_cli(tmp_path):
    """The CLI, as an operator runs it on AgentRoute's files: 0 for a mapped one, one line and exit 2 otherwise."""
    binary = fake_binary(str(tmp_path))
    out = tmp_path / "out"
    res = run_cli("render", "--profile", saved(tmp_path, MAPPED_PROFILE), "--out-dir", str(out),
                  "--port", "4100", "--binary", binary, env=ENV)
    assert res.returncode == 0, res.stderr
    cp = configparser.RawConfigParser()
    cp.read(out / "sidecar.conf")
    assert "--port 4100" in cp.get("fcgi-program:agentroute-sidecar", "command")
    # without --port, "port": 0 gives the default, never port 0
    res = run_cli("render", "--profile", saved(tmp_path, MAPPED_PROFILE), "--out-dir", str(tmp_path / "o2"),
                  "--binary", binary, env=ENV)
    assert res.returncode == 0, res.stderr
    assert "--port 4000 " in (tmp_path / "o2" / "sidecar.conf").read_text()

    empty = tmp_path / "o3"
    res = run_cli("render", "--profile", saved(tmp_path, NEW_PROFILE, "new.json"), "--out-dir", str(empty),
                  "--binary", binary, env=ENV)
    assert res.returncode == 2
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "models:" in lines[0]
    assert "no tier is mapped yet" in lines[0]
    assert "Traceback" not in res.stderr
    assert not empty.exists()


def test_fleet_of_agentroute_profiles_cli(tmp_path):
    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / "my work.json").write_bytes(MAPPED_PROFILE)
    (folder / "Über Team.json").write_bytes(MAPPED_PROFILE.replace(b'"my work"', '"Über Team"'.encode()))
    out = tmp_path / "out"
    binary = fake_binary(str(tmp_path))
    res = run_cli("render", "--profile", str(folder), "--out-dir", str(out), "--port", "4700",
                  "--binary", binary, env=ENV)
    assert res.returncode == 0, res.stderr
    cp = configparser.RawConfigParser()
    cp.read(out / "sidecar.conf", encoding="utf-8")
    # each member its own program holding its port (no [group:]), in the order of the profile names, as before
    programs = [s for s in cp.sections() if s.startswith(("program:", "fcgi-program:"))]
    assert programs == ["fcgi-program:agentroute-my-work", "fcgi-program:agentroute-Uber-Team"]
    assert not cp.has_section("group:agentroute")
    assert os.path.isfile(out / "agentroute-my-work" / "litellm.yaml")
    # both had "port": 0: each got its own port from --port
    ports = sorted(re.search(r"--port (\d+)", cp.get(f"fcgi-program:{p}", "command")).group(1)
                   for p in ("agentroute-Uber-Team", "agentroute-my-work"))
    assert ports == ["4700", "4701"]

    # a third profile that collides: refused, one line naming both files, nothing rewritten
    before = (out / "sidecar.conf").read_bytes()
    (folder / "z.json").write_bytes(MAPPED_PROFILE.replace(b'"my work"', b'"my-work"'))
    res = run_cli("render", "--profile", str(folder), "--out-dir", str(out), "--port", "4700",
                  "--binary", binary, env=ENV)
    assert res.returncode == 2
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert str(folder / "z.json") in lines[0]
    assert str(folder / "my work.json") in lines[0]
    assert (out / "sidecar.conf").read_bytes() == before
