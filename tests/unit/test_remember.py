"""Issue 22, item 3: an option given to render or apply is kept (OUT_DIR/sidecar.json) until given again."""

import json
import os

import pytest

from inprocess import KEYS, fake_binary, run_main
from sidecar_plugin.core.options.remember import KINDS, changes, merge, problem, recorded
from sidecar_plugin.names import DEFAULT_HEALTH_TIMEOUT
from sidecar_plugin.shell.render.build import RenderRequest

DEFAULTS = {"health-timeout": 20.0, "workers": 2, "no-autostart": False, "state-file": None, "user": ""}


# -- the merge, as data ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("before, given, resets, after", [
    ({}, {}, [], {}),
    ({"health-timeout": 60.0}, {}, [], {"health-timeout": 60.0}),  # not given: kept
    ({"health-timeout": 60.0}, {"health-timeout": 30.0}, [], {"health-timeout": 30.0}),  # given again: wins
    ({"health-timeout": 60.0, "workers": 1}, {}, ["health-timeout"], {"workers": 1}),  # reset: forgotten
    ({"health-timeout": 60.0, "workers": 1}, {"user": "u"}, ["all"], {"user": "u"}),  # reset all, then given
])
def test_merge(before, given, resets, after):
    assert merge(before, given, resets) == after


@pytest.mark.parametrize("before, after, lines", [
    ({"health-timeout": 60.0}, {}, ["health-timeout: 60 -> 20"]),
    ({}, {"health-timeout": 60.0, "workers": 2}, ["health-timeout: 20 -> 60"]),  # the default given: no change
    ({"state-file": "/a"}, {"no-autostart": True}, ["no-autostart: off -> on", "state-file: /a -> (default)"]),
    ({"user": "u"}, {}, ["user: u -> (none)"]),
])
def test_change_lines_old_and_new(before, after, lines):
    assert changes(before, after, DEFAULTS) == lines


def test_recorded_values_are_checked_and_an_older_record_has_none():
    assert recorded({"schema": 1, "groups": []}) is None
    assert recorded({"options": {"workers": 1, "unknown-later": 3}}) == {"workers": 1}
    assert problem("health-timeout", 0)
    assert problem("health-timeout", True)
    assert problem("workers", 1.5)
    assert problem("no-autostart", False)
    assert problem("host", 3)
    assert problem("workers", 2) is None


@pytest.mark.parametrize("command", ["render", "apply"])
def test_every_option_render_takes_is_remembered_and_not_given_is_none(command):
    from sidecar_plugin.cli import build_parser

    args = vars(build_parser().parse_args([command, "--profile", "p", "--out-dir", "o"]))
    options = set(args) - {"command", "debug", "profiles", "out_dir", "reset", "server_url", "timeout"}
    assert options == {n.replace("-", "_") for n in KINDS}
    assert all(args[o] is None for o in options)  # not given is not a default: the record's value may stand
    assert options <= set(RenderRequest.__dataclass_fields__)


# -- render, then render or apply without the option -------------------------------------------------------------

@pytest.fixture
def area(tmp_path):
    prof = tmp_path / "p.yaml"
    prof.write_text("name: w\nmodels:\n  fast: a/b\n")
    binary = fake_binary(str(tmp_path))

    def render(*extra):
        return run_main("render", "--profile", str(prof), "--out-dir", str(tmp_path / "out"), *extra, env=KEYS)
    render.out = str(tmp_path / "out")
    render.binary = binary
    return render


def _read(out, name):
    with open(os.path.join(out, name), "rb") as fh:
        return fh.read()


def test_an_option_is_kept_until_given_again_or_reset(area):
    res = area("--binary", area.binary, "--health-timeout", "60", "--workers", "1")
    assert res.returncode == 0, res.stderr
    conf = _read(area.out, "sidecar.conf")
    assert b"--health-timeout 60" in conf
    assert json.loads(_read(area.out, "sidecar.json"))["options"] == {
        "binary": area.binary, "health-timeout": 60.0, "workers": 1}

    res = area()  # nothing given: everything kept, byte for byte
    assert res.returncode == 0, res.stdout
    assert "\nchanged" not in "\n" + res.stdout, res.stdout
    assert "->" not in res.stdout, res.stdout
    assert _read(area.out, "sidecar.conf") == conf

    res = area("--health-timeout", "30")
    assert "health-timeout: 60 -> 30" in res.stdout.splitlines()
    assert b"--health-timeout 30" in _read(area.out, "sidecar.conf")
    res = area("--reset", "health-timeout")  # back to the default, whatever this release's is
    assert f"health-timeout: 30 -> {DEFAULT_HEALTH_TIMEOUT:g}" in res.stdout.splitlines(), res.stdout
    assert f"--health-timeout {DEFAULT_HEALTH_TIMEOUT:g}".encode() in _read(area.out, "sidecar.conf")
    assert b"--num_workers" not in _read(area.out, "sidecar.conf")  # workers 1 still kept

    res = area("--reset", "workers", "--workers", "2")
    assert res.returncode == 2
    assert "--reset workers: --workers is given too" in res.stderr


def test_a_render_given_no_option_re_renders_byte_identical(area, tmp_path, monkeypatch):
    """A render given no option records none (``options: {}``: not an older release's record), and re-renders
    unchanged; an empty record is no older one: a later option's line has its old value (issue 22 review)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    os.symlink(area.binary, folder / "litellm")
    monkeypatch.setenv("PATH", str(folder) + os.pathsep + os.environ["PATH"])  # the default binary: the stand-in
    assert area().returncode == 0
    before = {n: _read(area.out, n) for n in ("sidecar.conf", "sidecar.json", "litellm.yaml")}
    assert json.loads(before["sidecar.json"])["options"] == {}
    res = area()
    assert res.returncode == 0, res.stdout
    assert "\nchanged" not in "\n" + res.stdout, res.stdout
    assert "->" not in res.stdout, res.stdout
    assert {n: _read(area.out, n) for n in before} == before
    assert area("--workers", "1").returncode == 0
    assert area("--reset", "workers").returncode == 0  # the last kept option gone: the record keeps none
    res = area("--hang-window", "30")
    assert "hang-window: 20 -> 30" in res.stdout.splitlines(), res.stdout
    assert "recorded no options" not in res.stdout, res.stdout


def test_a_bad_recorded_value_is_one_line_naming_the_record(area):
    assert area("--binary", area.binary).returncode == 0
    path = os.path.join(area.out, "sidecar.json")
    doc = json.loads(_read(area.out, "sidecar.json"))
    doc["options"]["hang-window"] = -1
    with open(path, "w") as fh:
        json.dump(doc, fh)
    res = area()
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("\n") == 1, res.stderr
    assert f"{path}: options.hang-window: not a finite number of seconds above 0" in res.stderr
    assert "--reset hang-window" in res.stderr
    assert area("--reset", "hang-window").returncode == 0


def test_a_kept_key_variable_is_still_masked_in_every_line(area, tmp_path):
    secret = "sk-or-v1-KEPTVARIABLESECRET0123456789"
    env = dict(KEYS, MY_KEY=secret)
    prof = tmp_path / "p.yaml"
    assert run_main("render", "--profile", str(prof), "--out-dir", area.out, "--binary", area.binary,
                    "--api-key-env", "MY_KEY", env=env).returncode == 0
    prof.write_text(f"name: a/{secret}\nmodels:\n  fast: a/b\n")  # a bad field that echoes the key back
    res = run_main("render", "--profile", str(prof), "--out-dir", area.out, env=env)  # MY_KEY kept, not given
    assert res.returncode == 2, res.stderr
    assert "name:" in res.stderr, res.stderr
    assert secret not in res.stderr + res.stdout
