"""A new LiteLLM is applied without a refused connection (issue 23): an upgrade in place, another install.

Each LiteLLM install here is what pip leaves: a virtualenv whose ``litellm``
entry point names its interpreter, a ``litellm`` package and its dist-info. Its
app is tests/light_app.py (``SIDECAR_APP``), so the sidecar's own launcher
runs, uvicorn's workers on supervisord's socket included, without LiteLLM's
start. ``pip install -U litellm`` changes no file render writes: apply must
see it by itself, say that the sidecar needs a restart and that connections
wait meanwhile, and restart it without a refused or failed request.
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
from sidecar_plugin.shell.render.installed import SAME_START, started_at
from test_port import assert_nothing_lost, running, under_traffic

pytestmark = pytest.mark.integration

TESTS = os.path.dirname(os.path.abspath(__file__))


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
            fh.write(f"#!{self.python}\n# LiteLLM's entry point (stand-in: tests/fake_litellm.py)\n")
            fh.write(src.read().split("\n", 1)[1])  # --validate_config answers as LiteLLM's CLI does
        os.chmod(self.binary, 0o755)
        self.set_version(version)

    def set_version(self, version: str) -> None:
        """Install ``version`` as pip does: the old package files go, new ones are written."""
        for old in glob.glob(os.path.join(self.site, "litellm*")):
            shutil.rmtree(old)
        os.makedirs(os.path.join(self.site, "litellm"))
        with open(os.path.join(self.site, "litellm", "__init__.py"), "w") as fh:
            fh.write(f"__version__ = {version!r}\n")
        meta = os.path.join(self.site, f"litellm-{version}.dist-info")
        os.makedirs(meta)
        with open(os.path.join(meta, "METADATA"), "w") as fh:
            fh.write(f"Metadata-Version: 2.1\nName: litellm\nVersion: {version}\n")


def launched_by(pid):
    return psutil.Process(pid).cmdline()[0]


def test_a_new_litellm_in_place_or_elsewhere_is_applied_without_a_refused_connection(make_sidecar, tmp_path):
    first = FakeInstall(str(tmp_path / "venv-a"), "1.0.0")
    other = FakeInstall(str(tmp_path / "venv-b"), "2.0.0")
    sc = make_sidecar(workers=2, binary=first.binary, env={"SIDECAR_APP": "light_app:app"})
    with open(os.path.join(sc.out, "sidecar.conf")) as fh:
        assert "litellm_launch" in fh.read()  # the launcher serves the app, not the stand-in's own server
    sc.start_supervisord()
    st = running(sc, timeout=60)
    assert launched_by(st.pid) == first.python
    poll(lambda: len(psutil.Process(st.pid).children()) >= 2, 30, what="two workers")

    unchanged = sc.apply()  # nothing new: nothing restarts
    assert unchanged.returncode == 0 and "needs a restart" not in unchanged.stdout, unchanged.stdout
    assert sc.state().pid == st.pid

    # pip install -U litellm, in place: no file or command changes (later than an install at its start can be)
    poll(lambda: time.time() > started_at(st.pid) + SAME_START, 10, what="the sidecar older than SAME_START")
    traffic = under_traffic(sc)
    first.set_version("1.0.1")
    res = sc.apply()
    assert res.returncode == 0, res.stdout + res.stderr
    assert "needs a restart (LiteLLM 1.0.1 installed since it started)" in res.stdout, res.stdout
    assert "wait in the port's queue" in res.stdout, res.stdout
    upgraded = running(sc, timeout=60, other_than=st.pid)
    poll(lambda: traffic.short["ok"] >= 60, 30, what="more answers")
    traffic.stop()
    assert_nothing_lost(traffic, "apply of a LiteLLM upgraded in place")
    assert traffic.stream_outcomes == {3: "ok"}, traffic.summary()
    again = sc.apply()
    assert "needs a restart" not in again.stdout and sc.state().pid == upgraded.pid, again.stdout

    # --binary naming another install
    traffic = under_traffic(sc)
    sc.render_args[sc.render_args.index("--binary") + 1] = other.binary
    res = sc.apply()
    assert res.returncode == 0, res.stdout + res.stderr
    assert "needs a restart (binary changed)" in res.stdout and "wait in the port's queue" in res.stdout, res.stdout
    moved = running(sc, timeout=60, other_than=upgraded.pid)
    assert launched_by(moved.pid) == other.python
    poll(lambda: traffic.short["ok"] >= 60, 30, what="more answers")
    traffic.stop()
    assert_nothing_lost(traffic, "apply of --binary naming another install")
    assert traffic.stream_outcomes == {3: "ok"}, traffic.summary()
