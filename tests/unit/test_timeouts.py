"""Every timeout option refuses nan, inf, zero and negative values: one line, exit 2, nothing written."""

import os

import pytest

from inprocess import KEYS, PROFILE, run_main
from sidecar_plugin.client import Sidecar
from sidecar_plugin.errors import SidecarError

BAD = ["nan", "inf", "-inf", "0", "-1"]


@pytest.fixture
def profile(tmp_path):
    path = tmp_path / "profile.yaml"
    path.write_text(PROFILE)
    return str(path)


def refused(res):
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert res.stdout == ""
    assert len(res.stderr.strip().splitlines()) == 1
    assert "Traceback" not in res.stderr
    return res.stderr


@pytest.mark.parametrize("flag", ["--health-timeout", "--retry-delay", "--retry-max-delay", "--retry-reset-after"])
@pytest.mark.parametrize("value", BAD)
def test_render_and_apply_refuse_a_bad_timeout(tmp_path, profile, flag, value):
    out = tmp_path / "out"
    for command in ("render", "apply"):
        refused(run_main(command, "--profile", profile, "--out-dir", str(out), "--binary", "/bin/true",
                         f"{flag}={value}", env=KEYS))
        assert not out.exists()


@pytest.mark.parametrize("value", BAD)
def test_apply_refuses_a_bad_wait(tmp_path, profile, value):
    out = tmp_path / "out"
    err = refused(run_main("apply", "--profile", profile, "--out-dir", str(out), "--binary", "/bin/true",
                           f"--timeout={value}", env=KEYS))
    assert "--timeout" in err
    assert not out.exists()


def test_render_refuses_a_cap_below_the_first_delay(tmp_path, profile):
    out = tmp_path / "out"
    err = refused(run_main("render", "--profile", profile, "--out-dir", str(out), "--binary", "/bin/true",
                           "--retry-delay", "30", "--retry-max-delay", "10", env=KEYS))
    assert "--retry-max-delay" in err
    assert not out.exists()


@pytest.mark.parametrize("value", BAD)
def test_client_commands_refuse_a_bad_timeout(tmp_path, value):
    state = str(tmp_path / "state.json")
    for args in (["wait", "--timeout"], ["start", "--timeout"], ["stop", "--timeout"],
                 ["status", "--stale-after"], ["wait", "--stale-after"]):
        refused(run_main(*args[:1], "--state-file", state, f"{args[1]}={value}"))


@pytest.mark.parametrize("flag", ["--health-timeout", "--probe-interval", "--probe-timeout",
                                  "--starting-probe-interval", "--retry-delay", "--retry-max-delay",
                                  "--retry-reset-after"])
def test_the_listener_refuses_a_bad_timeout(tmp_path, flag):
    for value in BAD:
        refused(run_main("listen", "--program", "p", "--port", "1234", "--state-file", str(tmp_path / "s.json"),
                         "--log-file", str(tmp_path / "l.log"), f"{flag}={value}"))
    assert not os.path.exists(tmp_path / "s.json")


class _Controller:
    """Just enough of supervisorctl for the plugin to parse its arguments."""

    def __init__(self):
        self.lines = []
        self.exitstatus = 0

    def upcheck(self):
        return True

    def output(self, line):
        self.lines.append(line)


@pytest.mark.parametrize("value", BAD + ["soon"])
def test_the_ctl_plugin_refuses_a_bad_timeout(value):
    from sidecar_plugin.ctl import make_ctlplugin

    for action in ("wait", "start", "stop"):
        ctl = _Controller()
        make_ctlplugin(ctl).do_sidecar(f"{action} --timeout {value}")
        assert ctl.exitstatus == 2, ctl.lines
        assert len(ctl.lines) == 1, ctl.lines
        assert "--timeout" in ctl.lines[0], ctl.lines


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 0.0, -1.0])
def test_the_module_refuses_a_bad_stale_limit(tmp_path, value):
    with pytest.raises(SidecarError):
        Sidecar(state_file=str(tmp_path / "s.json"), stale_after=value)
