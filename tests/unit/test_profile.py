"""Every profile rule, as the operator meets it: a valid file loads, a bad one gets one line."""

import json

import pytest

from sidecar_plugin.profile import ProfileError, alias, load_profile, openrouter_model

GOOD_YAML = """name: work
port: 4000
models:
  heavy: anthropic/claude-opus-4.5
  balanced: openrouter/anthropic/claude-sonnet-4.5
  fast: deepseek/deepseek-v4-flash
api_base: https://openrouter.ai/api/v1
"""


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_yaml_profile_loads(tmp_path):
    prof = load_profile(write(tmp_path, "p.yaml", GOOD_YAML))
    assert prof.name == "work"
    assert prof.port == 4000
    assert prof.models["fast"] == "deepseek/deepseek-v4-flash"
    assert prof.api_base == "https://openrouter.ai/api/v1"


def test_agentroute_saved_json_loads_unchanged(tmp_path):
    saved = {"name": "work", "port": 4001, "models": {"heavy": "anthropic/claude-opus-4.5"},
             "created": "2026-01-05T10:00:00Z"}
    prof = load_profile(write(tmp_path, "work.json", json.dumps(saved)))
    assert (prof.name, prof.port, dict(prof.models)) == ("work", 4001, {"heavy": "anthropic/claude-opus-4.5"})


def test_alias_and_prefix():
    assert alias("heavy") == "agentroute-heavy"
    assert openrouter_model("anthropic/x") == "openrouter/anthropic/x"
    assert openrouter_model("openrouter/anthropic/x") == "openrouter/anthropic/x"


@pytest.mark.parametrize("text, field, problem", [
    ("models: {fast: a/b}\n", "name", "required"),
    ("name: a/b\nmodels: {fast: a/b}\n", "name", "/ or \\"),
    ("name: 'a\\b'\nmodels: {fast: a/b}\n", "name", "/ or \\"),
    ("name: ''\nmodels: {fast: a/b}\n", "name", "non-empty string"),
    ("name: 12\nmodels: {fast: a/b}\n", "name", "non-empty string"),
    ('name: "a\\nb"\nmodels: {fast: a/b}\n', "name", "control characters"),
    ("name: w\n", "models", "required"),
    ("name: w\nmodels: {}\n", "models", "at least one"),
    ("name: w\nmodels: [a/b]\n", "models", "mapping"),
    ("name: w\nmodels: {Heavy: a/b}\n", "models.\"Heavy\"", "tier name"),
    ("name: w\nmodels: {_x: a/b}\n", "models.\"_x\"", "tier name"),
    ("name: w\nmodels: {fast: ''}\n", "models.fast", "non-empty"),
    ("name: w\nmodels: {fast: 3}\n", "models.fast", "non-empty string"),
    ("name: w\nmodels: {fast: 'a b'}\n", "models.fast", "not a valid"),
    ("name: w\nport: -1\nmodels: {fast: a/b}\n", "port", "1 to 65535"),
    ("name: w\nport: 70000\nmodels: {fast: a/b}\n", "port", "1 to 65535"),
    ("name: w\nport: '4000'\nmodels: {fast: a/b}\n", "port", "integer"),
    ("name: w\nport: true\nmodels: {fast: a/b}\n", "port", "integer"),
    ("name: w\napi_base: ftp://x\nmodels: {fast: a/b}\n", "api_base", "http"),
    ("- just\n- a list\n", "", "mapping"),
    ("name: [unclosed\n", "", "not valid YAML"),
])
def test_bad_profile_one_line_naming_file_field_problem(tmp_path, text, field, problem):
    path = write(tmp_path, "bad.yaml", text)
    with pytest.raises(ProfileError) as exc:
        load_profile(path)
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith(path + ": ")
    assert field in msg
    assert problem in msg


def test_bad_json(tmp_path):
    path = write(tmp_path, "p.json", '{"name": "w", ')
    with pytest.raises(ProfileError, match="not valid JSON"):
        load_profile(path)


def test_missing_file(tmp_path):
    with pytest.raises(ProfileError, match="cannot read profile"):
        load_profile(str(tmp_path / "nope.yaml"))


def test_unknown_keys_are_ignored_for_forward_compatibility(tmp_path):
    prof = load_profile(write(tmp_path, "p.yaml", "name: w\nmodels: {fast: a/b}\nfuture_field: 1\n"))
    assert prof.models == {"fast": "a/b"}
