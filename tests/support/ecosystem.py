"""Helpers of the ecosystem tests: the operators' tools (promtool, node_exporter,
Debian's supervisord, ansible, build/twine), how to install a missing one, and
one sdist + wheel built per test session.

Tools are looked up, never assumed: a test that needs a missing one skips and
its reason says how to get it (``make test`` as root runs
tests/support/install_tools.sh, which installs the Debian packages).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
from typing import Dict, List, NoReturn, Set

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PROMETHEUS_DIR = os.path.join(ROOT, "conf", "prometheus")
RULES = os.path.join(PROMETHEUS_DIR, "agentroute-sidecar.rules.yml")
RULES_TEST = os.path.join(PROMETHEUS_DIR, "agentroute-sidecar.rules.test.yml")
DASHBOARD = os.path.join(ROOT, "conf", "grafana", "agentroute-sidecar.json")
PLAYBOOK = os.path.join(ROOT, "conf", "ansible", "sidecar.yml")
VENV_BIN = os.path.dirname(os.path.abspath(sys.executable))

# Named by the alerts and the dashboard but not (yet) exported by the listener: none since the
# retry metrics landed (issue 15); every name must be in a real scrape.
FUTURE_METRICS: set = set()  # every metric the rules and dashboard use is written by the listener now
METRIC_NAME = re.compile(r"\bagentroute_sidecar_[a-z_]+\b")


def under_make_test() -> bool:
    """True under ``make test``, which installed the test extra and ran tests/support/install_tools.sh first."""
    return bool(os.environ.get("SIDECAR_E2E_REQUIRED"))


def apt_installs() -> bool:
    """True when tests/support/install_tools.sh could install the Debian packages (root, apt-get, not opted out)."""
    return (os.geteuid() == 0 and shutil.which("apt-get") is not None
            and os.environ.get("SIDECAR_TEST_TOOLS", "1") != "0")


def missing(reason: str, installed_by_make_test: bool) -> NoReturn:
    """Skip the test for a missing tool, or fail it where ``make test`` should have installed the tool."""
    if installed_by_make_test and under_make_test():
        pytest.fail(f"{reason} (make test should have installed it)")
    pytest.skip(reason)


def apt_hint(package: str) -> str:
    return (f"run `make test` as root (tests/support/install_tools.sh installs it) or "
            f"`sudo apt-get install --no-install-recommends {package}`")


def require_tool(names: List[str], package: str) -> str:
    """Return the path of the first of ``names`` on PATH (or absolute); skip the test when none is."""
    for name in names:
        found = name if os.path.isabs(name) and os.access(name, os.X_OK) else shutil.which(name)
        if found:
            return found
    missing(f"{names[0]} not found; {apt_hint(package)}", apt_installs())


def require_venv_tool(name: str) -> str:
    """Return a test dependency's script from this virtualenv; skip when the test extra is not installed."""
    path = os.path.join(VENV_BIN, name)
    if not os.access(path, os.X_OK):
        missing(f"{name} not found beside {sys.executable}; install the test extra: "
                f"pip install -e '.[test]' (make install does)", True)
    return path


def metric_names(text: str) -> Set[str]:
    """Return every agentroute_sidecar_* name ``text`` mentions."""
    return set(METRIC_NAME.findall(text))


def shipped_metric_names() -> Set[str]:
    """Return the metric names the shipped alerts and dashboard use."""
    names: Set[str] = set()
    for path in (RULES, DASHBOARD):
        with open(path) as fh:
            names |= metric_names(fh.read())
    return names


def run(argv: List[str], timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)


_DIST: Dict[str, str] = {}


def built_dist(tmp_path_factory) -> Dict[str, str]:
    """Build the sdist and the wheel once per run (``python -m build`` on a copy of the tree).

    Once for every xdist worker of the run, not once per worker (a build is about 8 CPU-s, and three workers
    built it): the first to ask builds in the run's shared temp folder under a lock, the others wait on the
    lock and read what it left. A copy, so that the build's own files (build/, *.egg-info) never land in the
    working tree; the copy holds the tree without .git, the virtualenv and the ignored outputs. The folder
    is pytest's, removed with its other temp folders.
    """
    if _DIST:
        return _DIST
    try:
        import build  # noqa: F401
    except ImportError:
        missing("python -m build is not installed; install the test extra: pip install -e '.[test]'", True)
    base = tmp_path_factory.getbasetemp()
    shared = str(base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base)  # pytest-N/ under xdist
    work = os.path.join(shared, "dist-shared")
    with open(os.path.join(shared, "dist-shared.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also when the build fails
        done = os.path.join(work, "built.json")
        if os.path.exists(done):
            with open(done) as fh:
                _DIST.update(json.load(fh))
            return _DIST
        shutil.rmtree(work, ignore_errors=True)  # a build that failed half-way
        src = os.path.join(work, "src")
        shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
            ".git", ".venv", ".venv-*", "run", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
            ".hypothesis", ".mypy_cache", ".ruff_cache", "work"))  # mypy writes its cache meanwhile (make test)
        out = os.path.join(work, "dist")
        res = run([sys.executable, "-m", "build", "--outdir", out, src], timeout=600)  # the wheel from the sdist
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        files = sorted(os.listdir(out))
        wheels = [f for f in files if f.endswith(".whl")]
        sdists = [f for f in files if f.endswith(".tar.gz")]
        assert len(wheels) == 1, files
        assert len(sdists) == 1, files
        dist = dict(work=work, src=src, dist=out, wheel=os.path.join(out, wheels[0]),
                    sdist=os.path.join(out, sdists[0]), log=res.stdout + res.stderr)
        with open(done + ".tmp", "w") as fh:
            json.dump(dist, fh)
        os.replace(done + ".tmp", done)
    _DIST.update(dist)
    return _DIST
