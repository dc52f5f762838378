"""A wheel: `python -m build` makes an sdist and, from it, a wheel; `twine check --strict`
passes; the wheel installs into a clean virtualenv (dependencies from the index),
where `sidecar-plugin --help` runs and supervisord's rpcinterface and ctlplugin
factories import from the installed copy, not from this tree."""

import email.parser
import os
import re
import sys
import tarfile
import zipfile

import pytest

from ecosystem import ROOT, built_dist, require_venv_tool, run

pytestmark = pytest.mark.ecosystem


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    return built_dist(tmp_path_factory)


def package_modules(root):
    """Every module of the package in the source tree, as paths inside a wheel."""
    found = set()
    for folder, dirs, files in os.walk(os.path.join(root, "sidecar_plugin")):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if name.endswith(".py"):
                found.add(os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/"))
    return found


def test_sdist_and_wheel_pass_twine_check(dist):
    twine = require_venv_tool("twine")
    res = run([twine, "check", "--strict", dist["sdist"], dist["wheel"]])
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("PASSED") == 2, res.stdout


def test_wheel_holds_every_module_and_the_entry_point(dist):
    with zipfile.ZipFile(dist["wheel"]) as whl:
        names = set(whl.namelist())
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = email.parser.Parser().parsestr(whl.read(info).decode())
        entry_points = whl.read(info.replace("METADATA", "entry_points.txt")).decode()
    assert package_modules(ROOT) <= names, package_modules(ROOT) - names  # sub-packages included
    assert not [n for n in names if n.startswith("tests/")]
    assert "sidecar-plugin = sidecar_plugin.cli:main" in entry_points
    runtime = sorted(re.match(r"[\w.-]+", r).group() for r in meta.get_all("Requires-Dist")
                     if "extra ==" not in r)
    assert runtime == ["PyYAML", "psutil", "requests", "supervisor"], runtime
    assert meta["Name"].replace("-", "_") == "sidecar_plugin"
    assert meta["Requires-Python"] == ">=3.9"


def test_sdist_carries_the_example_configurations(dist):
    with tarfile.open(dist["sdist"]) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for path in ("setup.cfg", "pyproject.toml", "README.md", "docs/deploying.md", "conf/supervisord.conf",
                 "conf/prometheus/agentroute-sidecar.rules.yml", "conf/prometheus/agentroute-sidecar.rules.test.yml",
                 "conf/grafana/agentroute-sidecar.json", "conf/ansible/sidecar.yml", "sidecar_plugin/cli.py",
                 "tests/support/demo.py", "tests/support/fake_openrouter.py", "Makefile"):
        assert path in names, path


def test_wheel_installs_into_a_clean_virtualenv(dist, tmp_path):
    venv = tmp_path / "clean"
    res = run([sys.executable, "-m", "venv", str(venv)])
    assert res.returncode == 0, res.stderr
    py, bin_dir = str(venv / "bin" / "python"), venv / "bin"
    res = run([py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", dist["wheel"]], timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert run([py, "-m", "pip", "check"]).returncode == 0

    res = run([str(bin_dir / "sidecar-plugin"), "--help"], cwd=str(tmp_path))
    assert res.returncode == 0, res.stderr
    for command in ("render", "apply", "listen", "status", "wait", "start", "stop"):
        assert command in res.stdout, command

    probe = ("import sidecar_plugin, sidecar_plugin.rpc as rpc, sidecar_plugin.ctl as ctl, supervisor.options; "
             "print(sidecar_plugin.__file__); print(callable(rpc.make_rpcinterface), callable(ctl.make_ctlplugin))")
    res = run([py, "-I", "-c", probe], cwd=str(tmp_path))  # -I: nothing from this tree or the environment
    assert res.returncode == 0, res.stderr
    where, factories = res.stdout.split("\n")[:2]
    assert where.startswith(str(venv)), res.stdout
    assert factories == "True True", res.stdout
