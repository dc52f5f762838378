"""Prometheus text metrics of the sidecars: state documents in, exposition text out.

Pure, so the format is unit-tested (and parsed by the real
``prometheus_client`` in the tests); ``shell.listener.metrics`` writes it to a file.
"""

from __future__ import annotations

from typing import Any, Iterable, List, Mapping

from sidecar_plugin.core.listener.budget import MEMORY_FAMILIES, memory_samples
from sidecar_plugin.core.listener.counters import CAUSES, Counters
from sidecar_plugin.names import State

STATES = tuple(s.value for s in State)
PREFIX = "agentroute_sidecar_"


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
        ("retry_attempt", "gauge",
         "number of the listener's current retry of a sidecar down for good, 0 when not retrying"),
        ("next_retry_timestamp_seconds", "gauge",
         "unix time of the listener's next try to start the sidecar, 0 when none is scheduled"),
    ] + list(MEMORY_FAMILIES)
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
    counters = Counters.from_dict(doc.get("counters"))
    if name == "state":
        return [f'{PREFIX}state{{{lab},state="{s}"}} {1 if s == state else 0}' for s in STATES]
    if name == "up":
        return [f"{PREFIX}up{{{lab}}} {1 if state == 'running' and health.get('ok') else 0}"]
    if name == "state_seconds":
        return [f"{PREFIX}state_seconds{{{lab}}} {_num(max(0.0, now - float(doc.get('since') or now)))}"]
    if name == "starts_total":
        return [f"{PREFIX}starts_total{{{lab}}} {counters.starts}"]
    if name == "restarts_total":
        return [f"{PREFIX}restarts_total{{{lab}}} {counters.restarts}"]
    if name == "crashes_total":
        return [f'{PREFIX}crashes_total{{{lab},cause="{c}"}} {counters.crash_count(c)}' for c in CAUSES]
    if name == "probe_latency_seconds":
        latency = health.get("latency_ms")
        return [] if latency is None else [f"{PREFIX}probe_latency_seconds{{{lab}}} {_num(latency / 1000.0)}"]
    if name == "probe_failures":
        return [f"{PREFIX}probe_failures{{{lab}}} {int(health.get('consecutive_failures') or 0)}"]
    if name in ("retry_attempt", "next_retry_timestamp_seconds"):
        attempt, next_at = retry_of(doc)
        value = str(attempt) if name == "retry_attempt" else _num(next_at or 0)
        return [f"{PREFIX}{name}{{{lab}}} {value}"]
    if name == "heartbeat_timestamp_seconds":
        return [f"{PREFIX}heartbeat_timestamp_seconds{{{lab}}} {_num(doc.get('heartbeat_at') or now)}"]
    return memory_samples(name, doc, lab, PREFIX)


def retry_of(doc: Mapping[str, Any]) -> "tuple[int, float]":
    """Return (attempt, next_at) of a state document's ``retry`` (0 and 0 when absent or odd)."""
    saved = doc.get("retry")
    saved = saved if isinstance(saved, dict) else {}
    attempt, next_at = saved.get("attempt"), saved.get("next_at")
    attempt = attempt if isinstance(attempt, int) and not isinstance(attempt, bool) and attempt > 0 else 0
    next_at = float(next_at) if isinstance(next_at, (int, float)) and not isinstance(next_at, bool) else 0.0
    return attempt, next_at if next_at == next_at and abs(next_at) != float("inf") else 0.0
