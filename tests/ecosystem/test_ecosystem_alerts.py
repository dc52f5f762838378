"""Alerts and dashboard: the shipped Prometheus rules pass `promtool check rules` and
their unit tests (`promtool test rules`), each alert is shown both firing and quiet,
every query of the Grafana dashboard is valid PromQL (checked by promtool), and its
state timeline maps each lifecycle state to its name (evaluated by promtool)."""

import json
import os
import re

import pytest
import yaml

from ecosystem import DASHBOARD, PROMETHEUS_DIR, RULES, RULES_TEST, require_tool, run

pytestmark = pytest.mark.ecosystem

ISSUE_ALERTS = {  # what operators asked for -> the alert that answers it
    "sidecar down": "AgentRouteSidecarDown",
    "crash-looping": "AgentRouteSidecarCrashLooping",
    "listener heartbeat stale": "AgentRouteSidecarListenerStale",
    "health latency high": "AgentRouteSidecarHealthLatencyHigh",
    "retries in progress": "AgentRouteSidecarRetrying",
    "memory budget backing off (issue 24)": "AgentRouteSidecarMemoryBudgetBackoff",
    "a tier's upstream failure ratio (issue 33)": "AgentRouteSidecarTierFailing",
}


@pytest.fixture(scope="module")
def promtool():
    return require_tool(["promtool"], "prometheus")


def load(path):
    with open(path) as fh:
        return yaml.safe_load(fh)


def alerts():
    return [r for g in load(RULES)["groups"] for r in g["rules"] if "alert" in r]


def test_rules_pass_promtool_check(promtool):
    res = run([promtool, "check", "rules", RULES])
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in res.stdout


def test_rules_pass_their_unit_tests(promtool):
    res = run([promtool, "test", "rules", os.path.basename(RULES_TEST)], cwd=PROMETHEUS_DIR)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def test_every_alert_is_tested_firing_and_quiet():
    names = {r["alert"] for r in alerts()}
    assert set(ISSUE_ALERTS.values()) <= names
    firing, quiet = set(), set()
    for case in load(RULES_TEST)["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert firing == names, ((names - firing, names - quiet))
    assert quiet == names, ((names - firing, names - quiet))
    for rule in alerts():  # what a receiver routes on, and what a person reads
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]


def test_a_broken_rule_fails_its_unit_test(promtool, tmp_path):
    """The unit tests are not vacuous: a rule that waits longer than it should fails them."""
    text = open(RULES).read()
    assert "for: 2m" in text
    (tmp_path / os.path.basename(RULES)).write_text(text.replace("for: 2m", "for: 3m", 1))
    (tmp_path / os.path.basename(RULES_TEST)).write_text(open(RULES_TEST).read())
    res = run([promtool, "test", "rules", os.path.basename(RULES_TEST)], cwd=str(tmp_path))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "AgentRouteSidecarDown" in res.stdout + res.stderr, res.stdout + res.stderr


GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h",
                     "$instance": ".*", "$program": ".*", "$tier": "agentroute-.+"}


def dashboard_queries(dash):
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            yield "variable " + var["name"], var["query"]["query"]


def test_dashboard_queries_are_valid_promql(promtool, tmp_path):
    with open(DASHBOARD) as fh:
        dash = json.load(fh)
    assert dash["uid"] == "agentroute-sidecar"
    assert dash["panels"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:  # one data source variable, chosen at import
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
    rules = []
    for i, (where, expr) in enumerate(dashboard_queries(dash)):
        m = re.fullmatch(r"label_values\((.*), *([a-z_]+)\)", expr)
        if m:  # Grafana's label_values(selector, label): the selector must be valid
            expr = m.group(1)
        for var, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, (where, expr)
        rules.append({"record": f"dashboard:query_{i}", "expr": expr, "labels": {"panel": where}})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    res = run([promtool, "check", "rules", str(path)])
    assert res.returncode == 0, res.stdout + res.stderr


def test_dashboard_state_panel_maps_each_state_to_its_value(promtool, tmp_path):
    """The state timeline's query gives 0..3 and its value mappings name them."""
    with open(DASHBOARD) as fh:
        dash = json.load(fh)
    panel = next(p for p in dash["panels"] if p["type"] == "state-timeline")
    expr = panel["targets"][0]["expr"].replace("$instance", ".*").replace("$program", ".*")
    names = {int(k): v["text"] for k, v in panel["fieldConfig"]["defaults"]["mappings"][0]["options"].items()}
    assert names == {0: "stopped", 1: "starting", 2: "running", 3: "crashed"}
    series = []
    for program, current in (("a", "stopped"), ("b", "starting"), ("c", "running"), ("d", "crashed")):
        for state in names.values():
            series.append({"series": f'agentroute_sidecar_state{{instance="gw1:9100",job="node",program="{program}",'
                                     f'state="{state}"}}', "values": "1" if state == current else "0"})
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": []}))
    (tmp_path / "test.yml").write_text(yaml.safe_dump({
        "rule_files": ["rules.yml"], "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": [{
            "expr": expr, "eval_time": "0m",
            "exp_samples": [{"labels": f'{{instance="gw1:9100",program="{p}"}}', "value": v}
                            for p, v in (("a", 0), ("b", 1), ("c", 2), ("d", 3))]}]}]}))
    res = run([promtool, "test", "rules", "test.yml"], cwd=str(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr


def test_docs_scrape_config_of_the_traffic_metrics_passes_promtool(promtool, tmp_path):
    """The scrape configuration docs/operations.md gives for the sidecar's own port (issue 33) is one Prometheus
    loads: LiteLLM's /metrics/ route, the master key read from a file, the labels the dashboard filters on."""
    with open(os.path.join(os.path.dirname(RULES), "..", "..", "docs", "operations.md")) as fh:
        blocks = [b for b in re.findall(r"^```yaml\n(.*?)^```", fh.read(), flags=re.M | re.S) if "scrape_configs" in b]
    assert len(blocks) == 1
    doc = yaml.safe_load(blocks[0])
    job = doc["scrape_configs"][0]
    assert job["metrics_path"] == "/metrics/"
    assert set(job["authorization"]) == {"credentials_file"}
    assert "program" in job["static_configs"][0]["labels"]
    key = tmp_path / "agentroute-sidecar.key"
    key.write_text("sk-test\n")
    config = tmp_path / "prometheus.yml"
    config.write_text(blocks[0].replace(job["authorization"]["credentials_file"], str(key)))
    res = run([promtool, "check", "config", str(config)])
    assert res.returncode == 0, res.stdout + res.stderr
