"""The distribution's supervisord: Debian's `supervisor` package (4.2.5, /usr/bin/python3)
runs the plugin's rpcinterface, ctlplugin and listener.

The plugin is made importable exactly as docs/deploying.md says ("Debian's supervisor
package"): the dependencies come from Debian (python3-yaml, python3-psutil,
python3-requests), the wheel goes into a venv created by /usr/bin/python3 with
--system-site-packages and --without-pip, installed by Debian's pip with
--no-index (so nothing from PyPI can shadow Debian's supervisor), and one .pth
file in /usr/local/lib/python3.11/dist-packages puts that venv's site-packages
(the plugin alone) on the system Python's path. The test does that with a venv
and a .pth of its own, and removes both.

Then /usr/bin/supervisord (in a temp folder, on its own socket, with a
service's bare environment) runs the stand-in LiteLLM rendered by the venv's
sidecar-plugin; the test checks the listener's states, sidecar.getState over
XML-RPC, `/usr/bin/supervisorctl sidecar status|stop|start`, a SIGKILL of the
sidecar, and the venv's CLI. It never touches a system supervisord.
"""

import json
import os
import signal
import subprocess
import uuid

import psutil
import pytest

from ecosystem import apt_hint, apt_installs, built_dist, missing, run
from harness import KEYS, PROFILE, Sidecar, fake_binary, poll

pytestmark = [pytest.mark.ecosystem, pytest.mark.integration]

SYSTEM_PYTHON = "/usr/bin/python3"
SUPERVISORD = "/usr/bin/supervisord"
SUPERVISORCTL = "/usr/bin/supervisorctl"
SERVICE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
WHERE = ("import json, sys, importlib.metadata as md, supervisor, sidecar_plugin, sidecar_plugin.rpc, "
         "sidecar_plugin.ctl; print(json.dumps({'python': sys.executable, 'supervisor': supervisor.__file__, "
         "'version': md.version('supervisor'), 'plugin': sidecar_plugin.__file__}))")


def system_site_dir():
    """Return the system Python's folder for the administrator's packages (docs/deploying.md's .pth goes there)."""
    res = run([SYSTEM_PYTHON, "-c", "import site, sys; print(site.getsitepackages()[0]); print(sys.version_info[1])"],
              env=SERVICE_ENV)
    site_dir, minor = res.stdout.split()
    if site_dir != f"/usr/local/lib/python3.{minor}/dist-packages":  # where docs/deploying.md puts the .pth
        missing(f"{SYSTEM_PYTHON} is not Debian's (its site folder is {site_dir})", False)
    return site_dir


@pytest.fixture(scope="module")
def plugin_venv(tmp_path_factory):
    """The wheel installed for Debian's Python as docs/deploying.md says; yields the venv's folder."""
    if not os.access(SUPERVISORD, os.X_OK):
        missing(f"{SUPERVISORD} not found; {apt_hint('supervisor')}", apt_installs())
    deps = run([SYSTEM_PYTHON, "-c", "import supervisor, yaml, psutil, requests, pip, venv"], env=SERVICE_ENV)
    if deps.returncode != 0:
        missing(f"{SYSTEM_PYTHON} lacks a dependency ({deps.stderr.strip().splitlines()[-1]}); "
                + apt_hint("supervisor python3-yaml python3-psutil python3-requests python3-pip python3-venv"),
                apt_installs())
    site_dir = system_site_dir()
    if not (os.path.isdir(site_dir) and os.access(site_dir, os.W_OK)):
        missing(f"writing the .pth into {site_dir} (as docs/deploying.md says) needs root", apt_installs())
    wheel = built_dist(tmp_path_factory)["wheel"]
    venv = str(tmp_path_factory.mktemp("debian") / "agentroute")
    pth = os.path.join(site_dir, f"agentroute-sidecar-test-{uuid.uuid4().hex[:8]}.pth")
    try:
        res = run([SYSTEM_PYTHON, "-m", "venv", "--system-site-packages", "--without-pip", venv], env=SERVICE_ENV)
        assert res.returncode == 0, res.stderr
        res = run([venv + "/bin/python", "-m", "pip", "install", "--no-index", "--disable-pip-version-check", wheel],
                  env=SERVICE_ENV, timeout=300)
        assert res.returncode == 0, res.stdout + res.stderr
        purelib = run([venv + "/bin/python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                      env=SERVICE_ENV).stdout.strip()
        with open(pth, "w") as fh:
            fh.write(purelib + "\n")
        yield venv
    finally:
        if os.path.exists(pth):
            os.unlink(pth)


class RunByDebian(Sidecar):
    """The harness's sidecar, with Debian's supervisord and supervisorctl (a service's bare environment)."""

    def start_supervisord(self, wait_state="running", timeout=30):
        self.proc = subprocess.Popen([SUPERVISORD, "-c", self.conf], cwd=self.dir, env=SERVICE_ENV,
                                     start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        poll(self._rpc_up, 20, what="Debian's supervisord's socket")
        if wait_state:
            self.wait_state(wait_state, timeout)

    def ctl(self, *args, timeout=60):
        return run([SUPERVISORCTL, "-c", self.conf] + list(args), env=SERVICE_ENV, timeout=timeout)


class DebianSidecar(RunByDebian):
    """The harness's sidecar, rendered by the venv's CLI and run by Debian's supervisord.

    With the include alone: it carries the plugin, since Debian's Python imports it (the .pth).
    """

    plugin_in_main = False

    def __init__(self, folder, venv):
        self._places(folder, os.path.join(folder, "out"))
        self.venv = venv
        self.cli = os.path.join(venv, "bin", "sidecar-plugin")
        os.makedirs(self.out)
        self.profile = os.path.join(folder, "profile.yaml")
        with open(self.profile, "w") as fh:
            fh.write(PROFILE)
        self.set_mode({})
        self.render_args = ["--profile", self.profile, "--out-dir", self.out, "--port", str(self.port),
                            "--binary", fake_binary(folder), "--workers", "2"]
        res = run([self.cli, "render"] + self.render_args, env=dict(SERVICE_ENV, **KEYS), cwd=folder)
        assert res.returncode == 0, res.stderr
        self.write_supervisord_conf()


@pytest.fixture
def debian_sidecar(plugin_venv, tmp_path):
    folder = tmp_path / "debian"
    folder.mkdir()
    sc = DebianSidecar(str(folder), plugin_venv)
    try:
        yield sc
    finally:
        sc.cleanup()


def test_plugin_is_importable_as_documented(plugin_venv):
    res = run([SYSTEM_PYTHON, "-c", WHERE], env=SERVICE_ENV, cwd="/")
    assert res.returncode == 0, res.stderr
    where = json.loads(res.stdout)
    assert where["supervisor"].startswith("/usr/lib/python3/dist-packages/"), where
    assert where["version"] == "4.2.5", where
    assert where["plugin"].startswith(plugin_venv), where
    # the venv holds the plugin alone: nothing of it can shadow a Debian package on the system path
    purelib = os.path.dirname(os.path.dirname(where["plugin"]))
    assert sorted(n for n in os.listdir(purelib) if n != "__pycache__") == ["sidecar_plugin",
                                                                           "sidecar_plugin-0.1.0.dist-info"]


def test_debian_supervisord_runs_rpcinterface_ctlplugin_and_listener(debian_sidecar):
    sc = debian_sidecar
    sc.start_supervisord(wait_state=None)
    assert sc.rpc().supervisor.getSupervisorVersion() == "4.2.5"
    daemon = psutil.Process(sc.proc.pid)
    assert daemon.exe().startswith("/usr/bin/python3"), daemon.cmdline()
    assert daemon.cmdline()[1] == SUPERVISORD, daemon.cmdline()

    # the listener (the venv's sidecar-plugin on Debian's Python) takes the sidecar to running
    first = sc.wait_state("running", 30)
    listener = psutil.Process(sc.listener_info()["pid"])
    assert listener.exe().startswith("/usr/bin/python3"), listener.cmdline()
    assert sc.cli in listener.cmdline(), listener.cmdline()
    assert sc.health_ok()
    assert first.pid == sc.info()["pid"]

    # rpcinterface: sidecar.* inside Debian's supervisord
    state = sc.rpc().sidecar.getState(sc.program)
    assert state["state"] == "running", state
    assert state["port"] == sc.port, state
    assert state["pid"] == first.pid, state
    assert sc.program in sc.rpc().sidecar.listPrograms()

    # ctlplugin: Debian's supervisorctl, run by the system Python
    res = sc.ctl("sidecar", "status")
    assert res.returncode == 0, res.stdout
    assert f"{sc.program}       RUNNING    pid {first.pid}" in res.stdout, res.stdout
    assert "sidecar" in sc.ctl("help", "sidecar").stdout
    res = sc.ctl("sidecar", "stop")
    assert res.returncode == 0, res.stdout + res.stderr
    assert sc.state().state.value == "stopped"
    assert sc.port_listeners() == []
    assert sc.marked() == []  # the tree is gone, the port free
    res = sc.ctl("sidecar", "start")
    assert res.returncode == 0, res.stdout + res.stderr
    second = sc.wait_state("running", 5)
    assert second.pid != first.pid
    assert sc.health_ok()

    # the listener under Debian's supervisord: a SIGKILL is a crash, then running again
    os.kill(second.pid, signal.SIGKILL)
    third = sc.wait_state("running", 30, pred=lambda s: s.pid not in (None, second.pid))
    assert "crashed" in [h["state"] for h in sc.history()]
    poll(lambda: len(sc.marked()) == 3, 10, what="the new parent and its two workers only (the killed tree reaped)")

    # the venv's CLI against that supervisord
    res = run([sc.cli, "status", "-s", "unix://" + sc.sock], env=SERVICE_ENV)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "RUNNING" in res.stdout, res.stdout + res.stderr
    assert third.pid == sc.info()["pid"]


def test_debian_supervisord_keeps_the_port_open_through_every_event(debian_sidecar):
    """Issue 23 under 4.2.5: the held [fcgi-program] socket refuses nothing (SIGKILL, restart, stop + start)."""
    from traffic import Traffic

    sc = debian_sidecar
    sc.start_supervisord(wait_state=None)
    first = sc.wait_state("running", 30)
    assert sc.supervisord_listens()
    traffic = Traffic(sc.port, KEYS["AGENTROUTE_MASTER_KEY"], "agentroute-fast", rate=10, streams=(3,)).start()
    poll(lambda: traffic.short["ok"] >= 5, 15, what="traffic flowing")
    os.kill(first.pid, signal.SIGKILL)
    second = sc.wait_state("running", 30, pred=lambda s: s.pid not in (None, first.pid))
    assert sc.ctl("restart", sc.program, timeout=120).returncode == 0
    third = sc.wait_state("running", 30, pred=lambda s: s.pid not in (None, second.pid))
    assert sc.ctl("sidecar", "stop", timeout=120).returncode == 0
    assert sc.port_listeners() == []
    assert sc.supervisord_listens()
    assert sc.ctl("sidecar", "start", timeout=120).returncode == 0
    sc.wait_state("running", 30, pred=lambda s: s.pid not in (None, third.pid))
    poll(lambda: traffic.short["ok"] >= 80, 30, what="more answers")
    traffic.stop()
    print(f"\nROW | Debian 4.2.5: SIGKILL + restart + stop/start | refused {traffic.short['refused']} | "
          f"failed {traffic.short['failed']} | longest wait {traffic.longest:.2f} s")
    assert traffic.short["refused"] == 0, traffic.summary()
    assert traffic.short["failed"] == 0, traffic.summary()
    assert traffic.stream_outcomes == {3: "ok"}, traffic.summary()


def test_debian_supervisord_with_the_include_alone_survives_every_event(debian_sidecar):
    """Issue 30 under Debian's 4.2.5 with the plugin importable (the .pth) and the include alone: SIGKILL of the
    main process and of a worker, restart, update unchanged and changed, reload; supervisord stays up."""
    from test_safe_anywhere import doc, every_event

    sc = debian_sidecar
    sc.start_supervisord(wait_state=None)
    every_event(sc, lambda *extra: run([sc.cli, "render"] + sc.render_args + list(extra),
                                       env=dict(SERVICE_ENV, **KEYS), cwd=sc.dir))
    assert sc.supervisord_listens()
    assert doc(sc)["port_held"] is True


def test_debian_supervisord_starts_beside_a_foreign_holder(debian_sidecar):
    """Another server on the port at boot: Debian's supervisord starts, the sidecar is crashed naming it,
    and running once the address is free (the listener's retries)."""
    from test_safe_anywhere import starts_beside_a_foreign_holder

    starts_beside_a_foreign_holder(debian_sidecar, 120)
