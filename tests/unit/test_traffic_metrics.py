"""Traffic metrics (issue 33) without LiteLLM: what render writes, what it says, what apply restarts for,
and the launcher's half of prometheus_client's multiprocess mode.

The real LiteLLM serving them, counted over its workers and through an apply:
tests/e2e/test_e2e_traffic_metrics.py.
"""

import configparser
import json
import os
import stat

import pytest
import yaml

from inprocess import KEYS, fake_binary, run_main
from sidecar_plugin.names import MULTIPROC_ENV
from sidecar_plugin.shell.files.outfiles import snapshot
from sidecar_plugin.shell.litellm_launch import multiproc_metrics
from sidecar_plugin.shell.render.build import RenderRequest, build
from sidecar_plugin.shell.render.changes import restart_reasons

PROFILE = "name: work\nmodels:\n  fast: deepseek/deepseek-v4-flash\n"
PROGRAM = "agentroute-sidecar"


def render(tmp_path, *extra, binary=None):
    prof = tmp_path / "p.yaml"
    prof.write_text(PROFILE)
    out = str(tmp_path / "out")
    res = run_main("render", "--profile", str(prof), "--out-dir", out, "--binary", binary or fake_binary(str(tmp_path)),
                   *extra, env=KEYS)
    return res, out


def rendered(out):
    """(litellm.yaml, the program's environment, the record's entry of the sidecar, the record's options)."""
    with open(os.path.join(out, "litellm.yaml")) as fh:
        doc = yaml.safe_load(fh)
    cp = configparser.RawConfigParser()
    cp.read(os.path.join(out, "sidecar.conf"))
    with open(os.path.join(out, "sidecar.json")) as fh:
        record = json.load(fh)
    return doc, cp[f"fcgi-program:{PROGRAM}"]["environment"], record["sidecars"][PROGRAM], record["options"]


def test_on_by_default_the_callback_and_a_folder_per_sidecar(tmp_path):
    res, out = render(tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stderr == "", res.stderr
    doc, env, entry, _ = rendered(out)
    assert doc["litellm_settings"] == {"callbacks": ["prometheus"]}
    folder = os.path.join(out, "run", "prometheus")
    assert f'{MULTIPROC_ENV}="{folder}"' in env
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert entry["traffic_metrics"] is True
    # the way there is open to the sidecar's user (the out-dir's default ACL is for files: no x)
    assert stat.S_IMODE(os.stat(os.path.dirname(folder)).st_mode) == 0o755


def test_no_traffic_metrics_renders_neither_and_is_kept_until_reset(tmp_path):
    res, out = render(tmp_path, "--no-traffic-metrics")
    assert res.returncode == 0, res.stderr
    doc, env, entry, options = rendered(out)
    assert "litellm_settings" not in doc
    assert MULTIPROC_ENV not in env
    assert entry["traffic_metrics"] is False
    assert options["no-traffic-metrics"] is True
    assert render(tmp_path)[0].returncode == 0  # not given again: kept
    assert "litellm_settings" not in rendered(out)[0]
    res, _ = render(tmp_path, "--reset", "no-traffic-metrics")
    assert res.returncode == 0, res.stdout
    assert "no-traffic-metrics: on -> off" in res.stdout, res.stdout
    assert rendered(out)[0]["litellm_settings"] == {"callbacks": ["prometheus"]}



def request(tmp_path, **options):
    prof = tmp_path / "p.yaml"
    prof.write_text(PROFILE)
    return RenderRequest(profiles=[str(prof)], out_dir=str(tmp_path / "out"), binary=fake_binary(str(tmp_path)),
                         **options)


def test_turning_them_on_or_off_is_a_restart_apply_names(tmp_path):
    """The folder is the launcher's environment: a rolling reload forks from the same launcher, so it needs a restart."""
    assert render(tmp_path)[0].returncode == 0
    off = build(request(tmp_path, no_traffic_metrics=True), KEYS)
    assert restart_reasons(off, snapshot([f.path for f in off.files])) == {PROGRAM: "traffic metrics on or off"}
    on = build(request(tmp_path), KEYS)
    assert restart_reasons(on, snapshot([f.path for f in on.files])) == {}
    # a record of a release before traffic metrics: they were off
    record = os.path.join(str(tmp_path / "out"), "sidecar.json")
    with open(record) as fh:
        doc = json.load(fh)
    del doc["sidecars"][PROGRAM]["traffic_metrics"]
    with open(record, "w") as fh:
        json.dump(doc, fh)
    assert restart_reasons(on, snapshot([f.path for f in on.files])) == {PROGRAM: "traffic metrics on or off"}


def test_the_launcher_empties_the_folder_at_the_trees_start(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "prometheus"
    folder.mkdir()
    for name in ("counter_11.db", "gauge_livesum_11.db", "admitted_series_x"):
        (folder / name).write_text("old tree")
    os.symlink("/etc/passwd", folder / "histogram_12.db")  # removed, never followed
    monkeypatch.setenv(MULTIPROC_ENV, str(folder))
    assert multiproc_metrics.fresh_folder() == str(folder)
    assert os.listdir(folder) == []
    assert open("/etc/passwd").read()
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path / "made" / "here"))  # missing: made, owner-only
    assert multiproc_metrics.fresh_folder()
    assert stat.S_IMODE(os.stat(tmp_path / "made" / "here").st_mode) == 0o700
    (tmp_path / "file").write_text("")
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path / "file" / "x"))  # unusable: each worker counts alone, said
    assert multiproc_metrics.fresh_folder() is None
    assert MULTIPROC_ENV not in os.environ
    assert "cannot be used" in capsys.readouterr().out


def _exit():
    os._exit(0)



@pytest.mark.parametrize("value", ["", None])
def test_without_the_folder_the_launcher_changes_nothing(monkeypatch, value):
    from uvicorn.supervisors.multiprocess import Process

    if value is None:
        monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    else:
        monkeypatch.setenv(MULTIPROC_ENV, value)
    join = Process.join
    assert multiproc_metrics.fresh_folder() is None
    multiproc_metrics.counted_over_workers()
    assert Process.join is join
