"""The listener's metrics file, for node_exporter's textfile collector.

The listener already knows everything worth alerting on (state, restarts,
crashes and why, probe latency); writing it as a ``.prom`` file costs one
small atomic write per heartbeat and needs no HTTP server or extra
dependency. One listener watching several sidecars writes them all into one
file, atomically (the collector must never read half a file).
"""

from __future__ import annotations

import threading
from typing import Any, Dict

from sidecar_plugin.core.state.prometheus import render_metrics
from sidecar_plugin.shell.files.atomic import write_atomic


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
