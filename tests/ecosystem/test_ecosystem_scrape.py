"""A real scrape: node_exporter's textfile collector reads the listener's metrics file.

Starts a real supervisord running the stand-in LiteLLM with `--metrics-file` in a
textfile folder, and the real node_exporter (Debian's prometheus-node-exporter)
on a free port pointed at that folder; scrapes /metrics over HTTP and checks the
sidecar's series and values while it runs, after a SIGKILL of the sidecar (one
crash, one restart) and after `supervisorctl sidecar stop`. Every metric name the
shipped alerts and dashboard use must be in that scrape (or be one of the retry
metrics issue 15 adds).
"""

import os
import signal
import subprocess
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from ecosystem import FUTURE_METRICS, require_tool, run, shipped_metric_names
from harness import free_port, poll

pytestmark = [pytest.mark.ecosystem, pytest.mark.integration]

PROGRAM = "agentroute-sidecar"
CAUSES = ("exited", "start_failed", "health_timeout", "hung", "found_down")


class NodeExporter:
    """One node_exporter with only the textfile collector, owned by the test (own session)."""

    def __init__(self, binary, textfile_dir, log_path):
        self.port = free_port()
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [binary, f"--web.listen-address=127.0.0.1:{self.port}", "--collector.disable-defaults",
             "--collector.textfile", f"--collector.textfile.directory={textfile_dir}"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.session = requests.Session()
        self.session.trust_env = False

    def scrape(self):
        """Return {(name, labels...): value} of one scrape, or None while it does not answer."""
        try:
            r = self.session.get(f"http://127.0.0.1:{self.port}/metrics", timeout=2)
        except requests.RequestException:
            return None
        assert r.status_code == 200, r.text[:500]
        self.text = r.text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(r.text) for s in fam.samples}

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        self.log.close()


def series(scrape, name, **labels):
    return scrape.get((name, tuple(sorted(dict(labels, program=PROGRAM).items()))))


def sidecar_says(state, **want):
    """A check for poll(): the scrape shows the sidecar in ``state`` with the wanted series values."""
    def check(scrape):
        if not scrape or series(scrape, "agentroute_sidecar_state", state=state) != 1:
            return False
        return all(series(scrape, f"agentroute_sidecar_{name}") == value for name, value in want.items())
    return check


@pytest.fixture
def node_exporter(tmp_path):
    binary = require_tool(["prometheus-node-exporter", "node_exporter"], "prometheus-node-exporter")
    textfile_dir = tmp_path / "textfile"
    textfile_dir.mkdir()
    exporter = NodeExporter(binary, str(textfile_dir), str(tmp_path / "node_exporter.log"))
    exporter.dir = str(textfile_dir)
    try:
        yield exporter
    finally:
        exporter.stop()


def test_node_exporter_scrapes_the_listener_metrics(make_sidecar, node_exporter):
    metrics_file = os.path.join(node_exporter.dir, "agentroute.prom")
    sc = make_sidecar(render_args=["--metrics-file", metrics_file, "--memory-budget", "1024"])
    sc.start_supervisord()
    first = sc.wait_state("running", 30)

    # 1. running: the sidecar's series, as node_exporter serves them
    running = sidecar_says("running", up=1, starts_total=1)
    sampled = lambda x: running(x) and any(name == "agentroute_sidecar_memory_bytes" for name, _ in x)  # noqa: E731
    s = poll(lambda: (lambda x: x if sampled(x) else None)(node_exporter.scrape()), 30,
             interval=0.2, what="node_exporter serving the running sidecar's series")
    assert s[("node_textfile_scrape_error", ())] == 0
    assert [labels for name, labels in s if name == "node_textfile_mtime_seconds"
            and dict(labels)["file"].endswith("agentroute.prom")]  # the collector read our file
    for state in ("stopped", "starting", "crashed"):
        assert series(s, "agentroute_sidecar_state", state=state) == 0
    assert series(s, "agentroute_sidecar_restarts_total") == 0
    assert [series(s, "agentroute_sidecar_crashes_total", cause=c) for c in CAUSES] == [0] * len(CAUSES)
    assert series(s, "agentroute_sidecar_probe_failures") == 0
    assert 0 <= series(s, "agentroute_sidecar_probe_latency_seconds") < 1
    assert abs(time.time() - series(s, "agentroute_sidecar_heartbeat_timestamp_seconds")) < 15
    assert 0 <= series(s, "agentroute_sidecar_state_seconds") <= time.time() - first.since + 5

    # every name the alerts and the dashboard use is a real series (or a retry metric of issue 15)
    scraped = {name for name, _ in s}
    assert shipped_metric_names() - FUTURE_METRICS <= scraped, shipped_metric_names() - FUTURE_METRICS - scraped

    # the listener's file itself passes promtool's lint, when promtool is there
    try:
        promtool = require_tool(["promtool"], "prometheus")
    except pytest.skip.Exception:
        promtool = None
    if promtool:
        with open(metrics_file) as fh:
            lint = run([promtool, "check", "metrics"], input=fh.read())
        assert lint.returncode == 0, lint.stdout + lint.stderr

    # 2. SIGKILL of the sidecar: one crash (exited), one restart, running again under a new pid
    os.kill(first.pid, signal.SIGKILL)
    again = sidecar_says("running", up=1, starts_total=2, restarts_total=1)
    s = poll(lambda: (lambda x: x if again(x) else None)(node_exporter.scrape()), 60,
             interval=0.2, what="the crash and the restart in the scrape")
    crashes = {c: series(s, "agentroute_sidecar_crashes_total", cause=c) for c in CAUSES}
    assert sum(crashes.values()) == 1, crashes
    assert crashes["exited"] == 1, crashes
    assert sc.state().pid != first.pid

    # 3. stopped on purpose: state stopped, up 0 (what AgentRouteSidecarDown leaves alone)
    res = sc.ctl("sidecar", "stop")
    assert res.returncode == 0, res.stdout + res.stderr
    stopped = sidecar_says("stopped", up=0)
    s = poll(lambda: (lambda x: x if stopped(x) else None)(node_exporter.scrape()), 30,
             interval=0.2, what="the stopped sidecar in the scrape")
    assert sum(series(s, "agentroute_sidecar_crashes_total", cause=c) for c in CAUSES) == 1

