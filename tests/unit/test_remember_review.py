"""Issue 22's kept options, after review: nothing a render keeps, loses or overrides goes unsaid.

A kept --port yields to a changed profile port; an older release's render keeps what its sidecar.conf says it
was given; a record that cannot be read is a warning; an error about a kept option says where it was kept.
"""

import json
import os

import pytest

from inprocess import KEYS, fake_binary, run_main
from sidecar_plugin.core.options.readback import read_back
from sidecar_plugin.core.options.remember import blamed, profile_takes_port

# what `render --port 4100 --workers 1 --health-timeout 60` wrote at 08d59be (before options were kept)
OLD_CONF = """; Rendered by sidecar-plugin from {out}/../p.yaml; re-render instead of editing.
; Profile w: tiers agentroute-fast.

[program:agentroute-sidecar]
command={binary} --config {out}/litellm.yaml --host 127.0.0.1 --port {port}{workers}
directory={out}
environment=LITELLM_LOCAL_MODEL_COST_MAP="True",GRACEFUL_SHUTDOWN_TIMEOUT="{drain}",SIDECAR_PLUGIN_TREE="agentroute-sidecar@{out}/litellm.yaml"
umask=077
autostart=true
autorestart=true
startsecs=1
startretries=3
stopsignal=TERM
stopwaitsecs=65
stopasgroup=true
killasgroup=true
redirect_stderr=true
stdout_logfile={out}/litellm.log
stdout_logfile_maxbytes=10MB
stdout_logfile_backups=3
priority=900

[eventlistener:agentroute-sidecar-health]
command=/x/bin/sidecar-plugin listen --program agentroute-sidecar --host 127.0.0.1 --port {port} --state-file {out}/state.json --log-file {out}/litellm.log --config {out}/litellm.yaml --health-timeout {health} --retry-delay 10 --retry-max-delay 300 --retry-reset-after 600
events=PROCESS_STATE,TICK_5,REMOTE_COMMUNICATION
autostart=true
priority=100
"""
DEFAULTS = {"host": "127.0.0.1", "binary": "/x/bin/litellm", "workers": 2, "health-timeout": 300.0,
            "stop-timeout": 60, "hang-window": 20.0, "retry-delay": 10.0, "retry-max-delay": 300.0,
            "retry-reset-after": 600.0, "no-autostart": False, "user": ""}


def old_conf(out, binary="/x/bin/litellm", port=4100, workers=1, health="60", drain=60):
    more = f" --num_workers {workers} --timeout_worker_healthcheck 60" if workers > 1 else ""
    return OLD_CONF.format(out=out, binary=binary, port=port, workers=more, health=health, drain=drain)


# -- as data ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("conf, kept", [
    (dict(), {"port": 4100, "workers": 1, "health-timeout": 60.0}),
    (dict(port=4000, workers=2, health="20"), {}),  # the defaults, 20 s the previous release's: nothing given
    (dict(port=4000, workers=2, health="300", binary="/opt/litellm", drain=90),
     {"binary": "/opt/litellm", "stop-timeout": 90}),
])
def test_an_older_include_says_what_its_render_was_given(conf, kept):
    assert read_back(old_conf("/o", **conf), "/o", DEFAULTS) == kept
    assert read_back("not an include [", "/o", DEFAULTS) == {}
    assert read_back("", "/o", DEFAULTS) == {}


@pytest.mark.parametrize("now, then, takes", [
    (4010, None, True), (4010, 4010, False), (4020, 4010, True), (None, 4010, False), (None, None, False)])
def test_a_changed_profile_port_takes_over(now, then, takes):
    assert profile_takes_port(now, then) is takes


def test_an_error_about_a_kept_option_says_where_it_was_kept():
    kept = [("port", 99999, "/o/sidecar.json"), ("api-key-env", "MY_KEY", "/o/sidecar.json")]
    assert blamed("--port: must be from 1 to 65535 (got 99999)", kept).endswith(
        "; --port 99999 is kept from an earlier render (/o/sidecar.json): --reset port forgets it (or give --port)")
    assert "--reset api-key-env" in blamed("MY_KEY is not set: export ...", kept)
    assert blamed("--host: bad", kept) == "--host: bad"


# -- render ----------------------------------------------------------------------------------------------------

@pytest.fixture
def area(tmp_path):
    prof = tmp_path / "p.yaml"
    prof.write_text("name: w\nmodels:\n  fast: a/b\n")
    binary = fake_binary(str(tmp_path))

    def render(*extra, profile=None):
        return run_main("render", "--profile", str(profile or prof), "--out-dir", render.out, *extra, env=KEYS)
    render.out = str(tmp_path / "out")
    render.binary, render.profile = binary, prof
    return render


def _read(out, name):
    with open(os.path.join(out, name)) as fh:
        return fh.read()


def _record(out):
    return json.loads(_read(out, "sidecar.json"))


def test_an_edited_profile_port_takes_over_from_a_kept_port(area):
    assert area("--binary", area.binary, "--port", "4005").returncode == 0
    area.profile.write_text("name: w\nport: 4010\nmodels:\n  fast: a/b\n")
    res = area()
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0].startswith("port: 4005 -> 4010 (the profile's port changed"), res.stdout
    assert "--port 4010" in _read(area.out, "sidecar.conf")
    assert "port" not in _record(area.out)["options"]
    # a --port given over the profile's port wins, and is kept while the profile keeps its port
    assert area("--port", "4005").returncode == 0
    assert _record(area.out)["profile_port"] == 4010
    res = area()
    assert res.returncode == 0
    assert "port:" not in res.stdout
    assert "--port 4005" in _read(area.out, "sidecar.conf")
    area.profile.write_text("name: w\nport: 4020\nmodels:\n  fast: a/b\n")
    res = area()
    assert "port: 4005 -> 4020 (the profile's port changed" in res.stdout, res.stdout
    assert "--port 4020" in _read(area.out, "sidecar.conf"), res.stdout


def _old_render(area, **conf):
    """The files 08d59be's render left: its include and a record without options."""
    os.makedirs(area.out)
    with open(os.path.join(area.out, "sidecar.conf"), "w") as fh:
        fh.write(old_conf(area.out, binary=area.binary, **conf))
    with open(os.path.join(area.out, "sidecar.json"), "w") as fh:
        json.dump({"schema": 1, "groups": ["agentroute-sidecar", "agentroute-sidecar-health"],
                   "listener": "agentroute-sidecar-health", "sidecars": {}}, fh)


def test_an_older_release_s_render_keeps_the_options_its_include_holds(area):
    _old_render(area)
    res = area()
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    for line in ("binary: " + area.binary, "health-timeout: 60", "port: 4100", "workers: 1"):
        assert f"{line} (kept from the previous render's sidecar.conf)" in lines, res.stdout
    conf = _read(area.out, "sidecar.conf")
    assert "--port 4100" in conf
    assert "--health-timeout 60 " in conf
    assert "--num_workers" not in conf
    assert _record(area.out)["options"] == {"binary": area.binary, "health-timeout": 60.0, "port": 4100,
                                            "workers": 1}
    res = area()  # kept now: said once
    assert res.returncode == 0, res.stdout
    assert "kept from" not in res.stdout, res.stdout
    assert "->" not in res.stdout, res.stdout


def test_an_older_release_s_defaults_are_not_kept(area):
    _old_render(area, port=4000, workers=2, health="20")
    res = area("--binary", area.binary)
    assert res.returncode == 0, res.stdout
    assert "kept from" not in res.stdout, res.stdout
    assert "--health-timeout 300 " in _read(area.out, "sidecar.conf")  # 20 s was that release's default


@pytest.mark.parametrize("text, why", [("{not json", "not valid JSON"), ('{"options": [1]}', 'its "options" are not a mapping')])
def test_a_record_that_cannot_be_read_is_one_warning(area, text, why):
    assert area("--binary", area.binary, "--workers", "1").returncode == 0
    with open(os.path.join(area.out, "sidecar.json"), "w") as fh:
        fh.write(text)
    res = area()
    assert res.returncode == 0, res.stderr
    assert res.stderr == (f"sidecar-plugin: warning: {area.out}/sidecar.json: {why}; the options given to earlier "
                          "renders are read back from sidecar.conf\n")
    assert "workers: 1 (kept from the previous render's sidecar.conf)" in res.stdout
    assert "--num_workers" not in _read(area.out, "sidecar.conf")


@pytest.mark.parametrize("window, ok", [("0.5", False), ("1e-300", False), ("1.9", False), ("2", True),
                                        ("3601", False)])
def test_the_hang_window_is_two_seconds_at_least(area, window, ok):
    res = area("--binary", area.binary, "--hang-window", window)
    assert (res.returncode == 0) is ok, res.stderr
    if not ok:
        assert res.returncode == 2, res.stderr
        assert res.stderr.count("\n") == 1, res.stderr
        assert res.stderr.startswith("--hang-window: must be a number of seconds from 2 to 3600"), res.stderr
        assert not os.path.exists(area.out)


def test_a_bad_value_edited_into_the_record_names_it(area):
    assert area("--binary", area.binary, "--port", "4005").returncode == 0
    doc = _record(area.out)
    doc["options"]["port"] = 99999
    with open(os.path.join(area.out, "sidecar.json"), "w") as fh:
        json.dump(doc, fh)
    res = area()
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("\n") == 1, res.stderr
    assert f"--port 99999 is kept from an earlier render ({area.out}/sidecar.json): --reset port" in res.stderr


def test_a_kept_program_and_a_folder_of_profiles_hints_the_reset(area, tmp_path):
    assert area("--binary", area.binary, "--program", "mine").returncode == 0
    folder = tmp_path / "fleet"
    folder.mkdir()
    for name in ("a", "b"):
        (folder / f"{name}.yaml").write_text(f"name: {name}\nmodels:\n  fast: a/b\n")
    res = area(profile=folder)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("--program: names one sidecar"), res.stderr
    assert "--program mine is kept from an earlier render" in res.stderr
    assert "--reset program" in res.stderr
    assert area("--reset", "program", profile=folder).returncode == 0


def test_apply_says_no_option_change_when_supervisord_cannot_be_reached(area, tmp_path):
    assert area("--binary", area.binary, "--hang-window", "30").returncode == 0
    res = run_main("apply", "--profile", str(area.profile), "--out-dir", area.out, "--hang-window", "40",
                   "-s", f"unix://{tmp_path}/no.sock", env=KEYS)
    assert res.returncode != 0
    assert "cannot reach supervisord" in res.stderr
    assert "nothing was written" in res.stderr
    assert "hang-window" not in res.stdout, res.stdout
