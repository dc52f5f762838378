"""The master-key rule: AgentRoute's 64-hex gateway token is accepted, weak keys are refused in one line."""

import secrets

import pytest

from sidecar_plugin.core.render.masterkey import master_key_problem
from sidecar_plugin.core.render.litellm_yaml import new_master_key

GATEWAY_TOKEN = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"  # 64 hex, like AgentRoute's


@pytest.mark.parametrize("key", [
    GATEWAY_TOKEN,
    secrets.token_hex(16),                       # 128 bits: the floor
    "sk-" + secrets.token_urlsafe(32),            # what render generates
    "sk-TESTMASTERKEY0123456789abcdef0123",       # the suites' key
    "A1b2C3d4-E5f6G7h8_I9j0K1l2.M3n4O5p6~Q7r8",  # any visible ASCII
], ids=["gateway token", "128 bits", "render's", "the suites'", "visible ASCII"])  # pytest-xdist: the same ids
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


