"""LiteLLM's traffic metrics in processes: an install without prometheus_client, a worker that joined.

tests/unit/test_traffic_metrics.py holds what render writes and says, in-process.
"""

import multiprocessing
import os
import subprocess
import sys
from sidecar_plugin.names import MULTIPROC_ENV
from sidecar_plugin.shell.litellm_launch import multiproc_metrics
from test_traffic_metrics import _exit, render, rendered


def test_an_install_without_prometheus_client_is_said_in_one_line_and_left_off(tmp_path):
    """LiteLLM with its Prometheus callback and no prometheus_client does not start: render leaves it off."""
    venv = tmp_path / "ll"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    assert subprocess.run([str(python), "-c", "import prometheus_client"], capture_output=True).returncode != 0
    entry = venv / "bin" / "litellm"
    entry.write_text(f"#!{python}\nimport sys\nfrom litellm import run_server\nsys.exit(run_server())\n")
    entry.chmod(0o755)
    res, out = render(tmp_path, binary=str(entry))
    assert res.returncode == 0, res.stderr
    assert res.stderr.splitlines() == [
        f"sidecar-plugin: warning: traffic metrics: off, LiteLLM's install ({python}) lacks prometheus_client: "
        f"{venv / 'bin' / 'pip'} install prometheus_client, then apply again"]
    doc, env, entry_doc, options = rendered(out)
    assert "litellm_settings" not in doc
    assert MULTIPROC_ENV not in env
    assert entry_doc["traffic_metrics"] is False
    assert "no-traffic-metrics" not in options  # what the operator gave, not what render decided


def test_a_joined_worker_is_marked_dead_its_counts_stay(tmp_path, monkeypatch):
    """uvicorn's supervisor ends every worker with Process.join: its live gauges go, its counters stay."""
    from uvicorn.supervisors.multiprocess import Process

    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    monkeypatch.setattr(Process, "join", Process.join)  # put back after the test
    multiproc_metrics.counted_over_workers()
    worker = Process.__new__(Process)
    worker.process = multiprocessing.get_context("fork").Process(target=_exit)
    worker.process.start()
    pid = worker.pid
    for name in (f"counter_{pid}.db", f"histogram_{pid}.db", f"gauge_livesum_{pid}.db", f"gauge_all_{pid}.db",
                 "gauge_livesum_1.db"):
        (tmp_path / name).write_text("")
    worker.join()
    assert sorted(os.listdir(tmp_path)) == sorted([f"counter_{pid}.db", f"histogram_{pid}.db", f"gauge_all_{pid}.db",
                                                   "gauge_livesum_1.db"])
