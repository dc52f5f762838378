"""Metrics: Prometheus text that prometheus_client's parser reads, counters by transition."""

from prometheus_client.parser import text_string_to_metric_families

from sidecar_plugin.core.listener.counters import Counters, crash_cause
from sidecar_plugin.core.state.prometheus import render_metrics


def doc(program, state, **kw):
    base = {"program": program, "state": state, "since": 100.0, "heartbeat_at": 130.0,
            "health": {"ok": state == "running", "latency_ms": 2.5, "consecutive_failures": 0},
            "counters": Counters().as_dict()}
    base.update(kw)
    return base


def samples(text):
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_every_sidecar_labelled_and_parsable():
    counters = Counters().as_dict()
    counters["crashes"]["hung"] = 2
    text = render_metrics([doc("b", "crashed", counters=counters), doc("a", "running")], now=160.0)
    s = samples(text)
    assert s[("agentroute_sidecar_state", (("program", "a"), ("state", "running")))] == 1
    assert s[("agentroute_sidecar_state", (("program", "b"), ("state", "running")))] == 0
    assert s[("agentroute_sidecar_state", (("program", "b"), ("state", "crashed")))] == 1
    assert s[("agentroute_sidecar_up", (("program", "a"),))] == 1
    assert s[("agentroute_sidecar_up", (("program", "b"),))] == 0
    assert s[("agentroute_sidecar_state_seconds", (("program", "a"),))] == 60.0
    assert s[("agentroute_sidecar_crashes_total", (("cause", "hung"), ("program", "b")))] == 2
    assert s[("agentroute_sidecar_probe_latency_seconds", (("program", "a"),))] == 0.0025
    assert text.index('program="a"') < text.index('program="b"')  # stable order


def test_label_values_are_escaped():
    s = samples(render_metrics([doc('we"ird\\name', "stopped")], now=100.0))
    assert s[("agentroute_sidecar_up", (("program", 'we"ird\\name'),))] == 0


def test_counters_follow_transitions():
    c = Counters()
    c = c.after("stopped", "starting", "exited")
    c = c.after("starting", "running", "exited")
    c = c.after("running", "crashed", crash_cause(None, "RUNNING"))
    c = c.after("crashed", "starting", "exited")
    c = c.after("starting", "crashed", crash_cause("timeout", "STARTING"))
    assert c.starts == 2
    assert c.restarts == 1
    assert c.crash_count("exited") == 1
    assert c.crash_count("health_timeout") == 1


def test_causes():
    assert crash_cause("hung", "RUNNING") == "hung"
    assert crash_cause(None, "BACKOFF") == "start_failed"
    assert crash_cause(None, "EXITED", recovering=True) == "found_down"


def test_adopted_counters_ignore_garbage():
    c = Counters.from_dict({"starts": 3, "restarts": "x", "crashes": {"hung": 1, "exited": True, "nope": 5}})
    assert c.starts == 3
    assert c.restarts == 0
    assert c.crash_count("hung") == 1
    assert c.crash_count("exited") == 0
    assert "nope" not in c.as_dict()["crashes"]
    assert Counters.from_dict(None) == Counters()
