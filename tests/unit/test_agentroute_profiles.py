"""AgentRoute's own saved profiles, byte for byte as its store writes them, and the fleet names they give.

The store writes Go's ``json.MarshalIndent(p, "", "  ")``: two-space indent,
fields in struct order, map keys sorted, ``created`` in RFC 3339 with
nanoseconds, ``"port": 0`` (unused by AgentRoute: "not set") and
``"models": null`` until the terminal UI maps a tier.
"""

import json
import re

import pytest
from hypothesis import given, settings, strategies as st

from inprocess import KEYS
from sidecar_plugin.core.render.naming import fleet_programs, program_name, program_slug
from sidecar_plugin.core.profiles.agentroute import Profile, ProfileError, load_profile, name_problem
from sidecar_plugin.core.render.terms import PROGRAM_RE

ENV = KEYS

NEW_PROFILE = b"""{
  "name": "my work",
  "port": 0,
  "models": null,
  "created": "2026-11-20T10:31:07.123456789Z"
}"""

MAPPED_PROFILE = b"""{
  "name": "my work",
  "port": 0,
  "models": {
    "balanced": "openrouter/anthropic/claude-sonnet-4.5",
    "fast": "deepseek/deepseek-v4-flash",
    "heavy": "anthropic/claude-opus-4.5"
  },
  "created": "2026-11-20T10:31:07.123456789Z"
}"""


def saved(tmp_path, data, name="my work.json"):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_mapped_profile_loads_unchanged_port_0_is_not_set(tmp_path):
    prof = load_profile(saved(tmp_path, MAPPED_PROFILE))
    assert prof.name == "my work"
    assert prof.port is None  # "port": 0 means not set: render uses --port, else 4000
    assert dict(prof.models) == {"balanced": "openrouter/anthropic/claude-sonnet-4.5",
                                 "fast": "deepseek/deepseek-v4-flash", "heavy": "anthropic/claude-opus-4.5"}


def test_mapped_profile_with_unknown_fields_and_a_trailing_newline_loads(tmp_path):
    doc = json.loads(MAPPED_PROFILE)
    doc["description"] = "added by a newer AgentRoute"
    doc["tags"] = ["a", {"b": None}]
    prof = load_profile(saved(tmp_path, json.dumps(doc, indent=2).encode() + b"\n"))
    assert prof.name == "my work"
    assert len(prof.models) == 3


def test_new_profile_without_tiers_is_refused_with_one_line_saying_so(tmp_path):
    path = saved(tmp_path, NEW_PROFILE)
    with pytest.raises(ProfileError) as exc:
        load_profile(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}: models: ")
    assert "\n" not in msg
    assert "no tier is mapped yet" in msg



@pytest.mark.parametrize("name", ["my work", "-dash first", "Über Team", "工作", "a.b", " spaced ", "x" * 300,
                                  "100%", "emoji 🚀", "tab-free; semi;colon", "health"])
def test_any_name_agentroute_accepts_loads(name):
    assert name_problem(name) is None


@pytest.mark.parametrize("name, problem", [
    ("", "non-empty"), ("a/b", "/ or \\"), ("a\\b", "/ or \\"), ("line\nbreak", "control"),
    ("cr\rhere", "control"), ("nul\x00", "control"), ("sep\u2028", "control"), ("lone\ud800", "control"),
    (None, "non-empty"), (7, "non-empty"),
])
def test_names_agentroute_refuses_or_render_cannot_write(name, problem):
    assert problem in (name_problem(name) or "")


@pytest.mark.parametrize("name, program", [
    ("work", "agentroute-work"),              # a name that was valid before keeps its program
    ("Work_2.b-", "agentroute-Work_2.b-"),
    ("my work", "agentroute-my-work"),
    ("  my   work  ", "agentroute-my-work"),
    ("Über Team", "agentroute-Uber-Team"),
    ("café crème", "agentroute-cafe-creme"),
    ("-dash first", "agentroute-dash-first"),
    ("100%", "agentroute-100"),
    ("emoji 🚀 team", "agentroute-emoji-team"),
    ("工作", "agentroute-" + __import__("hashlib").sha256("工作".encode()).hexdigest()[:8]),
    ("...", "agentroute-" + __import__("hashlib").sha256(b"...").hexdigest()[:8]),
])
def test_program_name_rule(name, program):
    assert program_name(name, "agentroute") == program
    assert PROGRAM_RE.match(program)


def test_long_derived_names_are_cut_with_a_digest():
    a, b = "long name " + "x" * 100, "long name " + "x" * 101
    sa, sb = program_slug(a), program_slug(b)
    assert len(sa) == 64
    assert len(sb) == 64
    assert sa != sb
    assert re.fullmatch(r"long-name-x+-[0-9a-f]{8}", sa)


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=80).filter(lambda n: name_problem(n) is None))
def test_every_accepted_name_gives_a_supervisord_safe_program_deterministically(name):
    program = program_name(name, "agentroute")
    assert PROGRAM_RE.match(program)
    assert program == program_name(name, "agentroute")
    assert len(program_slug(name)) <= max(64, len(name))


def prof(name, source):
    return Profile(name=name, models={"fast": "x/y"}, source=source)


def test_collisions_are_refused_with_one_line_naming_both_files():
    with pytest.raises(ProfileError) as exc:
        fleet_programs([prof("my work", "/p/a.json"), prof("my-work", "/p/b.json")], "agentroute")
    msg = str(exc.value)
    assert msg.startswith("/p/b.json: name: 'my-work' becomes the program agentroute-my-work")
    assert "'my work' of /p/a.json" in msg
    assert "\n" not in msg
    with pytest.raises(ProfileError, match=r"/p/b\.json: name: 'same' is also the name of /p/a\.json"):
        fleet_programs([prof("same", "/p/a.json"), prof("same", "/p/b.json")], "agentroute")
    with pytest.raises(ProfileError, match="taken by the fleet's listener"):
        fleet_programs([prof("health", "/p/h.json")], "agentroute", reserved={"agentroute-health"})
    assert fleet_programs([prof("my work", "a"), prof("play", "b")], "agentroute") == {
        "my work": "agentroute-my-work", "play": "agentroute-play"}
