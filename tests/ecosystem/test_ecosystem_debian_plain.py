"""Debian's supervisord (4.2.5, /usr/bin/python3) that cannot import the plugin, with the include alone.

An operator who installs this package in a virtualenv and runs the
distribution's supervisord without making the plugin importable by it (no
.pth, as docs/deploying.md's Debian section would add) renders with
``--supervisord /usr/bin/supervisord``: render asks that supervisord's Python,
which cannot import sidecar_plugin, so the include carries no plugin (it would
keep supervisord from starting) and the sidecar is a plain ``[program]``.
supervisord stays up through every event and the sidecar is running again
after each; the state says the port is not held, and why.
"""

import os

import pytest

from ecosystem import apt_hint, apt_installs, missing, run
from harness import KEYS, run_cli
from test_ecosystem_debian import RunByDebian
from test_safe_anywhere import doc, every_event

pytestmark = [pytest.mark.ecosystem, pytest.mark.integration]

SUPERVISORD = "/usr/bin/supervisord"
SERVICE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
CONF = """[unix_http_server]
file={sock}

[supervisord]
logfile={dir}/supervisord.log
pidfile={dir}/supervisord.pid
childlogdir={dir}
nodaemon=true

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{sock}

[include]
files = {include}
"""


class PlainDebianSidecar(RunByDebian):
    """Rendered by this venv's CLI for Debian's supervisord, whose Python cannot import the plugin."""

    def write_supervisord_conf(self):
        with open(self.conf, "w") as fh:
            fh.write(CONF.format(sock=self.sock, dir=self.dir, include=os.path.join(self.out, "sidecar.conf")))


@pytest.fixture
def plain_debian(tmp_path):
    if not os.access(SUPERVISORD, os.X_OK):
        missing(f"{SUPERVISORD} not found; {apt_hint('supervisor')}", apt_installs())
    probe = run(["/usr/bin/python3", "-c", "import sidecar_plugin"], env=SERVICE_ENV, cwd="/")
    assert probe.returncode != 0, "Debian's Python imports sidecar_plugin here (a .pth left by another test?)"
    folder = tmp_path / "plain"
    folder.mkdir()
    sc = PlainDebianSidecar(str(folder), workers=2, render_args=["--supervisord", SUPERVISORD])
    try:
        yield sc
    finally:
        sc.cleanup()


def test_debian_supervisord_without_the_plugin_survives_every_event(plain_debian):
    sc = plain_debian
    res = run_cli("render", *sc.render_args, env=KEYS)
    assert res.returncode == 0, res.stderr
    assert "/usr/bin/supervisord cannot load the plugin" in res.stderr, res.stderr
    with open(os.path.join(sc.out, "sidecar.conf")) as fh:
        conf = fh.read()
    assert "rpcinterface:sidecar" not in conf
    assert f"[program:{sc.program}]" in conf
    sc.start_supervisord(wait_state=None)
    every_event(sc)
    state = doc(sc)
    assert state["port_held"] is False
    assert "cannot import sidecar_plugin" in state["port_note"]
