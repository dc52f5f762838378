"""The master-key rule: AgentRoute's 64-hex gateway token is accepted, weak keys are refused in one line."""

import os
import secrets

import pytest
import yaml

from harness import API_KEY, fake_binary, run_cli
from sidecar_plugin.core.render.masterkey import master_key_problem
from sidecar_plugin.core.render.litellm_yaml import new_master_key

GATEWAY_TOKEN = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"  # 64 hex, like AgentRoute's


@pytest.mark.parametrize("key", [
    GATEWAY_TOKEN,
    secrets.token_hex(16),                       # 128 bits: the floor
    "sk-" + secrets.token_urlsafe(32),            # what render generates
    "sk-TESTMASTERKEY0123456789abcdef0123",       # the suites' key
    "A1b2C3d4-E5f6G7h8_I9j0K1l2.M3n4O5p6~Q7r8",  # any visible ASCII
])
def test_strong_keys_pass(key):
    assert master_key_problem(key) is None


@pytest.mark.parametrize("key, words", [
    ("sk-short", "too short"),
    ("0123456789abcdef0123456789abcde", "too short"),          # 31 characters
    ("sk-" + "0123456789abcdef0123456789abcde", "too short"),  # sk- does not count
    ("a" * 64, "different characters"),
    ("abab" * 16, "different characters"),
    (GATEWAY_TOKEN[:40] + " " + GATEWAY_TOKEN[40:], "printable ASCII"),
    (GATEWAY_TOKEN + "\n", "printable ASCII"),
    ("é" + GATEWAY_TOKEN, "printable ASCII"),
    ("os.environ/AGENTROUTE_MASTER_KEY_" + GATEWAY_TOKEN, "os.environ/"),
    (GATEWAY_TOKEN * 9, "longer than 512"),
])
def test_weak_or_unusable_keys_are_refused(key, words):
    problem = master_key_problem(key)
    assert problem is not None
    assert words in problem
    assert key not in problem


def test_generated_keys_keep_the_sk_form_and_pass_the_rule():
    keys = {new_master_key() for _ in range(50)}
    assert len(keys) == 50
    for key in keys:
        assert key.startswith("sk-")
        assert len(key) == 3 + 43
        assert master_key_problem(key) is None


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
