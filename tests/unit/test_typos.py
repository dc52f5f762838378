"""Issue 22, item 4: a typo in a profile is named (a warning line), never silently rendered on a default."""

import json

import pytest

from inprocess import KEYS, fake_binary, run_main
from sidecar_plugin.core.profiles.agentroute import ProfileError, parse_profile
from sidecar_plugin.core.profiles.typos import near_misses

GOOD = "name: w\nmodels:\n  fast: a/b\n"


@pytest.mark.parametrize("key, meant", [("prot", "port"), ("modles", "models"), ("nmae", "name"),
                                        ("api_bsae", "api_base"), ("Port", "port"), ("crated", "created")])
def test_a_near_miss_is_named_with_the_key_it_probably_meant(key, meant):
    assert near_misses({key: 1, "name": "w"}, ("name", "port", "models", "api_base", "created")) == {key: meant}


@pytest.mark.parametrize("key", ["created", "description", "tags", "future_field", "updated", "x" * 500])
def test_agentroute_fields_and_unrelated_keys_stay_silent(key):
    prof = parse_profile(json.dumps({"name": "w", "port": 0, "models": {"fast": "a/b"}, key: 1}).encode(), "p.json")
    assert prof.warnings == ()


def test_a_typo_loads_with_one_warning_line_naming_both_keys():
    prof = parse_profile((GOOD + "prot: 4001\n").encode(), "p.yaml")
    assert prof.port is None  # ignored, as before: but no longer in silence
    assert prof.warnings == ("p.yaml: prot: unknown key, ignored; did you mean port?",)


def test_warnings_are_bounded_and_one_line_each():
    keys = "".join(f"port{i}: 1\n" for i in range(30)) + "po\\nrt: 1\n"
    prof = parse_profile((GOOD + keys.replace("\\n", "")).encode(), "p.yaml")
    assert len(prof.warnings) == 11
    assert prof.warnings[-1].endswith("more unknown keys close to known ones, ignored")
    assert all("\n" not in w for w in prof.warnings)


@pytest.mark.parametrize("text, expected", [
    ("name: w\nmodles:\n  fast: a/b\n", "models: required (tier -> OpenRouter model id); did you mean models "
                                        "(found modles)?"),
    ("name: w\nmodels: null\nmodel: {fast: a/b}\n", "did you mean models (found model)?"),
    ("nmae: w\nmodels: {fast: a/b}\n", "name: required; did you mean name (found nmae)?"),
])
def test_a_missing_required_field_beside_its_near_miss_names_the_near_miss(text, expected):
    with pytest.raises(ProfileError) as exc:
        parse_profile(text.encode(), "p.yaml")
    assert expected in str(exc.value)
    assert "\n" not in str(exc.value)


def test_without_a_near_miss_the_message_is_the_old_one():
    with pytest.raises(ProfileError, match="no tier is mapped yet"):
        parse_profile(b'{"name": "w", "port": 0, "models": null, "created": "2026-11-20T10:31:07Z"}', "p.json")


def test_render_prints_the_warning_once_on_stderr_and_still_renders(tmp_path):
    prof = tmp_path / "p.yaml"
    prof.write_text(GOOD + "prot: 4001\n")
    res = run_main("render", "--profile", str(prof), "--out-dir", str(tmp_path / "out"),
                   "--binary", fake_binary(str(tmp_path)), env=KEYS)
    assert res.returncode == 0, res.stderr
    assert res.stderr.splitlines() == [f"sidecar-plugin: warning: {prof}: prot: unknown key, ignored; "
                                       "did you mean port?"]
    assert "prot" not in res.stdout
