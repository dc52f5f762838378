"""Prometheus text metrics of the sidecars, for node_exporter's textfile collector.

The listener already knows everything worth alerting on (state, restarts,
crashes and why, probe latency); writing it as a ``.prom`` file costs one
small atomic write per heartbeat and needs no HTTP server or extra
dependency. ``render_metrics`` is pure (state documents -> text) so the format
is unit-tested; ``MetricsFile`` gathers the documents of every sidecar one
listener watches and writes them as one file, atomically (the collector must
never read half a file).
"""

from __future__ import annotations

import threading
from typing import Any, Dict, Iterable, List, Mapping, Optional

from sidecar_plugin.atomic import write_atomic

STATES = ("stopped", "starting", "running", "crashed")
CAUSES = ("exited", "start_failed", "health_timeout", "hung", "found_down")
PREFIX = "agentroute_sidecar_"


def crash_cause(halted: Optional[str], supervisor_state: Optional[str], recovering: bool = False) -> str:
    """Return why the sidecar crashed, as a metric label (one of CAUSES)."""
    if halted == "timeout":
        return "health_timeout"
    if halted == "hung":
        return "hung"
    if recovering:
        return "found_down"
    if supervisor_state in ("BACKOFF", "FATAL"):
        return "start_failed"
    return "exited"


def new_counters() -> Dict[str, Any]:
    """Return zeroed counters: starts, restarts (a start after a crash), crashes by cause."""
    return {"starts": 0, "restarts": 0, "crashes": {cause: 0 for cause in CAUSES}}


def adopt_counters(saved: Any) -> Dict[str, Any]:
    """Return counters carried over from a previous listener's state file (bad values ignored)."""
    counters = new_counters()
    if not isinstance(saved, dict):
        return counters
    for key in ("starts", "restarts"):
        if isinstance(saved.get(key), int) and not isinstance(saved.get(key), bool):
            counters[key] = max(0, saved[key])
    crashes = saved.get("crashes")
    if isinstance(crashes, dict):
        for cause in CAUSES:
            value = crashes.get(cause)
            if isinstance(value, int) and not isinstance(value, bool):
                counters["crashes"][cause] = max(0, value)
    return counters


def count_transition(counters: Dict[str, Any], before: str, after: str, cause: str) -> None:
    """Update the counters for one state change (``before`` -> ``after``)."""
    if after == "starting":
        counters["starts"] += 1
        if before == "crashed":
            counters["restarts"] += 1
    elif after == "crashed":
        counters["crashes"][cause] = counters["crashes"].get(cause, 0) + 1


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    return repr(float(value))


def render_metrics(docs: Iterable[Mapping[str, Any]], now: float) -> str:
    """Return the exposition text for the state documents of several sidecars."""
    docs = sorted(docs, key=lambda d: str(d.get("program")))
    families: List[tuple] = [
        ("state", "gauge", "1 for the sidecar's current lifecycle state, 0 for the others"),
        ("up", "gauge", "1 when the sidecar is running and answered its last health check"),
        ("state_seconds", "gauge", "seconds since the sidecar entered its current state"),
        ("starts_total", "counter", "times the sidecar entered the starting state"),
        ("restarts_total", "counter", "starts that followed a crash"),
        ("crashes_total", "counter", "crashes by cause"),
        ("probe_latency_seconds", "gauge", "latency of the last health probe"),
        ("probe_failures", "gauge", "failed health probes in a row"),
        ("heartbeat_timestamp_seconds", "gauge", "unix time the listener last wrote this sidecar's state"),
    ]
    out: List[str] = []
    for name, kind, text in families:
        out.append(f"# HELP {PREFIX}{name} {text}")
        out.append(f"# TYPE {PREFIX}{name} {kind}")
        for doc in docs:
            out.extend(_samples(name, doc, now))
    return "\n".join(out) + "\n"


def _samples(name: str, doc: Mapping[str, Any], now: float) -> List[str]:
    program = _label(str(doc.get("program")))
    lab = f'program="{program}"'
    state = doc.get("state")
    health = doc.get("health") or {}
    counters = adopt_counters(doc.get("counters"))
    if name == "state":
        return [f'{PREFIX}state{{{lab},state="{s}"}} {1 if s == state else 0}' for s in STATES]
    if name == "up":
        return [f"{PREFIX}up{{{lab}}} {1 if state == 'running' and health.get('ok') else 0}"]
    if name == "state_seconds":
        return [f"{PREFIX}state_seconds{{{lab}}} {_num(max(0.0, now - float(doc.get('since') or now)))}"]
    if name == "starts_total":
        return [f"{PREFIX}starts_total{{{lab}}} {counters['starts']}"]
    if name == "restarts_total":
        return [f"{PREFIX}restarts_total{{{lab}}} {counters['restarts']}"]
    if name == "crashes_total":
        return [f'{PREFIX}crashes_total{{{lab},cause="{c}"}} {counters["crashes"][c]}' for c in CAUSES]
    if name == "probe_latency_seconds":
        latency = health.get("latency_ms")
        return [] if latency is None else [f"{PREFIX}probe_latency_seconds{{{lab}}} {_num(latency / 1000.0)}"]
    if name == "probe_failures":
        return [f"{PREFIX}probe_failures{{{lab}}} {int(health.get('consecutive_failures') or 0)}"]
    if name == "heartbeat_timestamp_seconds":
        return [f"{PREFIX}heartbeat_timestamp_seconds{{{lab}}} {_num(doc.get('heartbeat_at') or now)}"]
    return []


class MetricsFile:
    """The one metrics file of a listener: every sidecar's latest document, written together."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.docs: Dict[str, Dict[str, Any]] = {}
        self.lock = threading.Lock()

    def update(self, doc: Dict[str, Any], now: float) -> None:
        """Record one sidecar's document and rewrite the file (atomically, 0644)."""
        with self.lock:
            self.docs[str(doc.get("program"))] = doc
            write_atomic(self.path, render_metrics(self.docs.values(), now).encode("utf-8"), 0o644)
