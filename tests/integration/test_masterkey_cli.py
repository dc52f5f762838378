"""The master key through the CLI as a process: AgentRoute's hex token from the named variable, a weak key
refused in one line writing nothing, a saved weak key refused with its path.

tests/unit/test_masterkey.py holds the strength rules, in-process.
"""

import os

import pytest
import yaml

from harness import API_KEY, fake_binary, run_cli
from test_masterkey import GATEWAY_TOKEN


def setup(tmp_path):
    prof = tmp_path / "p.yaml"
    prof.write_text("name: work\nmodels:\n  fast: deepseek/deepseek-v4-flash\n")
    return str(prof), str(tmp_path / "out"), fake_binary(str(tmp_path))


def test_render_takes_agentroutes_hex_token_from_the_named_variable(tmp_path):
    prof, out, binary = setup(tmp_path)
    res = run_cli("render", "--profile", prof, "--out-dir", out, "--binary", binary,
                  "--master-key-env", "GATEWAY_TOKEN",
                  env={"OPENROUTER_API_KEY": API_KEY, "GATEWAY_TOKEN": GATEWAY_TOKEN, "AGENTROUTE_MASTER_KEY": ""})
    assert res.returncode == 0, res.stderr
    doc = yaml.safe_load(open(os.path.join(out, "litellm.yaml")))
    assert doc["general_settings"]["master_key"] == GATEWAY_TOKEN
    assert not os.path.exists(os.path.join(out, "master.key"))  # provided, so not saved
    assert GATEWAY_TOKEN not in res.stdout + res.stderr
    assert GATEWAY_TOKEN not in open(os.path.join(out, "sidecar.conf")).read()


@pytest.mark.parametrize("key", ["sk-short", "a" * 64, "os.environ/X" + GATEWAY_TOKEN])
def test_render_refuses_a_weak_key_in_one_line_writing_nothing(tmp_path, key):
    prof, out, binary = setup(tmp_path)
    res = run_cli("render", "--profile", prof, "--out-dir", out, "--binary", binary,
                  env={"OPENROUTER_API_KEY": API_KEY, "AGENTROUTE_MASTER_KEY": key})
    assert res.returncode == 2
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("AGENTROUTE_MASTER_KEY: the master key ")
    assert key not in res.stderr
    assert "Traceback" not in res.stderr
    assert not os.path.exists(out)


def test_a_saved_weak_key_is_refused_with_its_path(tmp_path):
    prof, out, binary = setup(tmp_path)
    os.makedirs(out)
    with open(os.path.join(out, "master.key"), "w") as fh:
        fh.write("sk-tooshort\n")
    res = run_cli("render", "--profile", prof, "--out-dir", out, "--binary", binary,
                  env={"OPENROUTER_API_KEY": API_KEY, "AGENTROUTE_MASTER_KEY": ""})
    assert res.returncode == 2
    assert res.stderr.strip() == (f"{out}/master.key: the saved master key is too short: it needs at least 32 "
                                  "characters (besides an optional 'sk-'); make one with: openssl rand -hex 32; "
                                  "delete the file to generate a new one")
