"""A new LiteLLM is applied without a refused connection (issue 23): an upgrade in place, another install.

Each LiteLLM install here is what pip leaves: a virtualenv whose ``litellm``
entry point names its interpreter (and imports ``litellm`` first, as LiteLLM's
does), a ``litellm`` package and its dist-info. The package serves
tests/support/light_app.py's app (``SIDECAR_APP=litellm:app``), so the sidecar's own
launcher runs the install's code, uvicorn's workers on supervisord's socket
included, without LiteLLM's start. ``pip install -U litellm`` changes no file render writes: apply must
see it by itself, say so, and replace the tree in place (the launcher re-executes
itself: ``shell.render.relaunch``) without a refused or failed request.
"""

import glob
import os
import shutil
import subprocess
import sys
import sysconfig
import time

import psutil
import pytest

from harness import FAKE_LITELLM, poll
from sidecar_plugin.shell.render import litellm_install
from sidecar_plugin.shell.render.executables import litellm_launcher
from sidecar_plugin.shell.render.litellm_install import SAME_START, started_at
from test_port import assert_nothing_lost, running, under_traffic

pytestmark = pytest.mark.integration

TESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "support")


class FakeInstall:
    """A LiteLLM install in ``folder``: a venv (its packages: this one's), the entry point, a versioned package."""

    def __init__(self, folder: str, version: str) -> None:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", folder], check=True, timeout=120)
        self.python = os.path.join(folder, "bin", "python")
        self.site = glob.glob(os.path.join(folder, "lib", "python*", "site-packages"))[0]
        with open(os.path.join(self.site, "zz_sidecar_tests.pth"), "w") as fh:  # uvicorn, yaml, the stand-ins
            fh.write(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n{TESTS}\n")
        self.binary = os.path.join(folder, "bin", "litellm")
        with open(FAKE_LITELLM) as src, open(self.binary, "w") as fh:
            fh.write(f"#!{self.python}\n# LiteLLM's entry point (stand-in: tests/support/fake_litellm.py)\nimport litellm\n")
            fh.write(src.read().split("\n", 1)[1])  # --validate_config answers as LiteLLM's CLI does
        os.chmod(self.binary, 0o755)
        self.set_version(version)

    def set_version(self, version: str, broken: bool = False, app: bool = True) -> None:
        """Install ``version`` as pip does: the old package files go, new ones are written (``broken``: its
        import fails, as an upgrade that lacks a dependency; not ``app``: it imports, but serves nothing)."""
        for old in glob.glob(os.path.join(self.site, "litellm*")):
            shutil.rmtree(old)
        os.makedirs(os.path.join(self.site, "litellm"))
        self.init = os.path.join(self.site, "litellm", "__init__.py")
        with open(self.init, "w") as fh:
            fh.write(f"raise ImportError('litellm {version}: no module named backoff')\n" if broken else
                     f"__version__ = {version!r}\n" + ("from light_app import app\n" if app else ""))
        meta = self.meta = os.path.join(self.site, f"litellm-{version}.dist-info")
        os.makedirs(meta)
        with open(os.path.join(meta, "METADATA"), "w") as fh:
            fh.write(f"Metadata-Version: 2.1\nName: litellm\nVersion: {version}\n")


APP = {"SIDECAR_APP": "litellm:app"}  # the app the install's own package serves


def launched_by(pid):
    return psutil.Process(pid).cmdline()[0]


def serves_version(sc, pid, version):
    """Whether the launcher ``pid`` said in the sidecar's log that it serves LiteLLM ``version``."""
    try:
        with open(sc.log_file) as fh:
            return any(f"pid {pid} serves port" in line and line.rstrip().endswith(f"LiteLLM {version}")
                       for line in fh)
    except FileNotFoundError:
        return False


def newer_checkout(path):
    """An operator's folder holding a litellm checkout newer than any install (just written)."""
    os.makedirs(os.path.join(path, "litellm"))
    os.makedirs(os.path.join(path, "litellm-9.9.9.dist-info"))
    with open(os.path.join(path, "litellm-9.9.9.dist-info", "METADATA"), "w") as fh:
        fh.write("Metadata-Version: 2.1\nName: litellm\nVersion: 9.9.9\n")
    with open(os.path.join(path, "litellm", "__init__.py"), "w") as fh:
        fh.write("")
    return path


def module_named_like_the_stdlib(path):
    """An operator's folder with a csv.py (importlib.metadata imports csv) that marks its import; return the mark."""
    os.makedirs(path)
    marker = os.path.join(path, "csv-was-imported")
    with open(os.path.join(path, "csv.py"), "w") as fh:
        fh.write(f"open({marker!r}, 'w').close()\nraise ImportError('not the csv module')\n")
    return path, marker


def older_than_same_start(st):
    poll(lambda: time.time() > started_at(st.pid) + SAME_START, 10, what="the sidecar older than SAME_START")


def test_a_new_litellm_in_place_or_elsewhere_is_applied_without_a_refused_connection(make_sidecar, tmp_path):
    first = FakeInstall(str(tmp_path / "venv-a"), "1.0.0")
    other = FakeInstall(str(tmp_path / "venv-b"), "2.0.0")
    sc = make_sidecar(workers=2, binary=first.binary, env=APP)
    with open(os.path.join(sc.out, "sidecar.conf")) as fh:
        assert "litellm_launch" in fh.read()  # the launcher serves the app, not the stand-in's own server
    sc.start_supervisord()
    st = running(sc, timeout=60)
    assert launched_by(st.pid) == first.python
    poll(lambda: serves_version(sc, st.pid, "1.0.0"), 30, what="the launcher naming LiteLLM 1.0.0")
    poll(lambda: len(psutil.Process(st.pid).children()) >= 2, 30, what="two workers")

    unchanged = sc.apply()  # nothing new: nothing restarts
    assert unchanged.returncode == 0, unchanged.stdout
    assert "needs a restart" not in unchanged.stdout, unchanged.stdout
    assert "replacing its tree" not in unchanged.stdout, unchanged.stdout
    assert sc.state().pid == st.pid

    # none of these is an install: a configuration tool's pass setting permissions and owners again and a hard
    # link (each moves the files' ctime); apply run from a folder holding a newer litellm checkout, or a csv.py
    older_than_same_start(st)
    for path in (first.init, first.meta, os.path.join(first.meta, "METADATA")):
        os.chmod(path, os.stat(path).st_mode)
        os.chown(path, os.stat(path).st_uid, os.stat(path).st_gid)
    os.link(first.init, str(tmp_path / "init-link"))
    folder, marker = module_named_like_the_stdlib(str(tmp_path / "stdlib-like"))
    for where in (None, newer_checkout(str(tmp_path / "checkout")), folder):
        same = sc.apply(cwd=where)
        assert same.returncode == 0, ((where, same.stdout + same.stderr))
        assert "needs a restart" not in same.stdout, ((where, same.stdout + same.stderr))
        assert "replacing its tree" not in same.stdout, ((where, same.stdout + same.stderr))
        assert sc.state().pid == st.pid
    assert not os.path.exists(marker), "the probe imported the operator's csv.py"

    # an install that cannot be judged is said, and restarts nothing: metadata dated in the future (a clock
    # ahead would read "installed since it started" on every apply)
    dated = os.stat(first.meta).st_mtime
    os.utime(first.meta, (time.time() + 600, time.time() + 600))
    future = sc.apply()
    assert future.returncode == 0, future.stdout
    assert "needs a restart" not in future.stdout, future.stdout
    assert "replacing its tree" not in future.stdout, future.stdout
    assert f"cannot tell which LiteLLM {first.python} holds (its {os.path.basename(first.meta)} is dated in " \
        "the future): a LiteLLM upgraded in place is not seen by this apply" in future.stdout, future.stdout
    os.utime(first.meta, (dated, dated))
    assert sc.state().pid == st.pid

    # pip install -U litellm, in place: no file or command changes (later than an install at its start can be)
    traffic = under_traffic(sc)
    try:
        first.set_version("1.0.1")
        res = sc.apply()
        assert res.returncode == 0, res.stdout + res.stderr
        # replaced in place (shell.render.relaunch): the launcher re-executes itself, importing the new LiteLLM
        assert "replacing its tree in place (LiteLLM 1.0.1 installed since it started)" in res.stdout, res.stdout
        assert "needs a restart" not in res.stdout, res.stdout
        upgraded = running(sc, timeout=60)
        assert upgraded.pid == st.pid
        poll(lambda: serves_version(sc, upgraded.pid, "1.0.1"), 30, what="the launcher naming LiteLLM 1.0.1")
        poll(lambda: traffic.short["ok"] >= 60, 30, what="more answers")
    finally:
        traffic.stop()
    assert_nothing_lost(traffic, "apply of a LiteLLM upgraded in place")
    assert traffic.stream_outcomes == {3: "ok"}, traffic.summary()
    again = sc.apply()
    assert "needs a restart" not in again.stdout, again.stdout
    assert "replacing its tree" not in again.stdout, again.stdout
    assert sc.state().pid == upgraded.pid, again.stdout

    # --binary naming another install
    traffic = under_traffic(sc)
    try:
        sc.render_args[sc.render_args.index("--binary") + 1] = other.binary
        res = sc.apply()
        assert res.returncode == 0, res.stdout + res.stderr
        assert "replacing its tree in place (binary changed)" in res.stdout, res.stdout
        moved = running(sc, timeout=60)
        assert moved.pid == upgraded.pid  # the same process now runs the other install's interpreter
        assert launched_by(moved.pid) == other.python
        poll(lambda: serves_version(sc, moved.pid, "2.0.0"), 30, what="the launcher naming LiteLLM 2.0.0")
        poll(lambda: traffic.short["ok"] >= 60, 30, what="more answers")
    finally:
        traffic.stop()
    assert_nothing_lost(traffic, "apply of --binary naming another install")
    assert traffic.stream_outcomes == {3: "ok"}, traffic.summary()


def test_a_broken_upgrade_is_refused_while_the_old_litellm_serves(make_sidecar, tmp_path):
    """An upgrade whose import fails: apply refuses it before restarting anything (LiteLLM's --validate_config
    imports the new install), the old process keeps serving, and apply says what to do."""
    first = FakeInstall(str(tmp_path / "venv"), "1.0.0")
    sc = make_sidecar(workers=2, binary=first.binary, env=APP)
    sc.start_supervisord()
    st = running(sc, timeout=60)
    older_than_same_start(st)
    traffic = under_traffic(sc)
    try:
        first.set_version("1.0.1", broken=True)
        res = sc.apply()
        assert res.returncode == 1, res.stdout + res.stderr
        err = " ".join((res.stdout + res.stderr).split())
        assert "under the LiteLLM 1.0.1 installed since it started" in err, err
        assert "nothing was written; it keeps running the LiteLLM it started with" in err, err
        assert "needs a restart" not in res.stdout, res.stdout
        assert "replacing its tree" not in res.stdout, res.stdout
        assert sc.state().pid == st.pid
        assert sc.state().state == "running"
        poll(lambda: traffic.short["ok"] >= 40, 30, what="more answers")
    finally:
        traffic.stop()
    assert_nothing_lost(traffic, "apply of a broken upgrade")
    assert sc.state().pid == st.pid

    first.set_version("1.0.2")  # the operator fixes the install: the next apply takes it
    fixed = sc.apply()
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "replacing its tree in place (LiteLLM 1.0.2 installed since it started)" in fixed.stdout, \
        fixed.stdout + fixed.stderr
    assert running(sc, timeout=60).pid == st.pid
    assert serves_version(sc, st.pid, "1.0.2")


@pytest.mark.parametrize("also", [(), ("--max-requests", "5000")], ids=["alone", "with-a-command-change"])
def test_a_new_install_that_passes_the_check_but_does_not_start_is_said_not_restarted_twice(make_sidecar, tmp_path,
                                                                                            also):
    """The new LiteLLM passes --validate_config but its app does not start: apply rolls the files back without
    restarting the sidecar on that install again, whatever else changed with it, and says it cannot be rolled
    back (the install is not apply's)."""
    first = FakeInstall(str(tmp_path / "venv"), "1.0.0")
    sc = make_sidecar(workers=2, binary=first.binary, env=APP)
    sc.start_supervisord()
    st = running(sc, timeout=60)
    older_than_same_start(st)
    first.set_version("1.0.1", app=False)
    res = sc.apply(*also)
    assert res.returncode == 1, res.stdout + res.stderr
    out = " ".join((res.stdout + res.stderr).split())
    assert out.count("needs a restart (") + out.count("replacing its tree in place (") == 1, out
    assert "the files are rolled back, but agentroute-sidecar cannot be: it runs the LiteLLM 1.0.1 installed " \
        "since it started, which does not come up (put the previous LiteLLM back, then run apply again)" in out, out
    first.set_version("1.0.2")  # the operator puts a working LiteLLM in place: the sidecar comes up
    assert sc.apply(*also).returncode == 0
    assert running(sc, timeout=90, other_than=st.pid)


@pytest.mark.parametrize("second, interpreter", [
    ("'''exec' /srv/a/very/long/path/bin/python3 \"$0\" \"$@\"", "/srv/a/very/long/path/bin/python3"),
    ("'''exec' \"/srv/my venv/bin/python3\" \"$0\" \"$@\"", "/srv/my venv/bin/python3"),  # a path with a space
], ids=["long", "spaced"])
def test_pips_sh_entry_point_names_its_interpreter(tmp_path, second, interpreter):
    """pip writes ``#!/bin/sh`` and an exec line where the interpreter's path is too long or has a space."""
    path = tmp_path / "litellm"
    path.write_text(f"#!/bin/sh\n{second}\n' '''\n# -*- coding: utf-8 -*-\nimport re\nimport sys\n"
                    "from litellm import run_server\n")
    assert litellm_launcher(str(path))[0] == interpreter


def test_a_probe_that_hangs_or_cannot_run_is_given_up_with_the_reason(tmp_path, monkeypatch):
    hang = tmp_path / "python3"
    hang.write_text("#!/bin/sh\nexec sleep 30\n")
    hang.chmod(0o755)
    monkeypatch.setattr(litellm_install, "PROBE_TIMEOUT", 0.5)
    assert litellm_install.install_of(str(hang)) == "it did not answer within 0.5 s"
    assert litellm_install.install_of(str(tmp_path / "none")) == "it cannot run (FileNotFoundError)"
