"""Publish what the listener knows: the state file, its history, the metrics file.

The listener calls ``publish`` on every change and at each heartbeat. A
history line is appended only when the state changed; a write that fails
(a full disk, a read-only folder) is said once in the log and retried at the
next heartbeat, never fatal: the sidecar must stay watched.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional

from sidecar_plugin.names import State
from sidecar_plugin.shell.listener.metrics import MetricsFile
from sidecar_plugin.shell.files.statefile import append_history, write_state


class Publisher:
    """Writes one sidecar's state document where clients and collectors read it."""

    def __init__(self, state_file: str, metrics: Optional[MetricsFile], log: Any) -> None:
        self.state_file = state_file
        self.metrics = metrics
        self.log = log
        self.last_state: Optional[State] = None  # what the last history line (or the old file) said
        self.failing = False

    def publish(self, doc: Dict[str, Any], state: State, now: float) -> None:
        try:
            try:
                self._record(doc, state, now)
            except FileNotFoundError:  # the folder was removed under us (say /run emptied): make it again
                os.makedirs(os.path.dirname(os.path.abspath(self.state_file)), mode=0o755, exist_ok=True)
                self.log.warning("the state folder of %s was gone: created it again", self.state_file)
                self._record(doc, state, now)
        except OSError as exc:
            if not self.failing:
                self.log.error("cannot write %s: %s (will keep trying)", self.state_file, exc.strerror or exc)
            self.failing = True
            return
        if self.failing:
            self.log.info("state file writable again")
        self.failing = False
        if self.metrics is not None:
            try:
                self.metrics.update(doc, now)
            except OSError as exc:
                self.log.warning("cannot write the metrics file %s: %s", self.metrics.path, exc.strerror or exc)

    def _record(self, doc: Dict[str, Any], state: State, now: float) -> None:
        """The history line of a change first, then the state file: whenever the file says a state, its line is
        in the history (a reader that saw ``running`` found ``starting`` last in it). A history that cannot be
        written never holds the state file back: it is written, then the history's error raised."""
        if state is not self.last_state:
            try:
                append_history(self.state_file, {
                    "at": now, "from": self.last_state.value if self.last_state else None,
                    "state": doc["state"], "pid": doc["pid"], "supervisor_state": doc["supervisor_state"],
                    "error": doc["error"], "listener_pid": doc["listener_pid"],
                })
            except FileNotFoundError:
                raise
            except OSError:
                write_state(self.state_file, doc)
                raise
            self.last_state = state
        write_state(self.state_file, doc)
