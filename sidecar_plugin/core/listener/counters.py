"""What the listener counts across the sidecar's life: starts, restarts, crashes by cause.

Pure and immutable so the state machine can carry the counters in its model
and every count is decided (and tested) where the transition is. They are
written into the state file, so a restarted listener carries them on, and the
metrics file exposes them as Prometheus counters.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Dict, Optional, Tuple

from sidecar_plugin.names import State

CAUSES = ("exited", "start_failed", "health_timeout", "hung", "found_down")


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


def _count(value: Any) -> int:
    return max(0, value) if isinstance(value, int) and not isinstance(value, bool) else 0


@dataclass(frozen=True)
class Counters:
    """Starts, restarts (a start after a crash) and crashes by cause."""

    starts: int = 0
    restarts: int = 0
    crashes: Tuple[Tuple[str, int], ...] = tuple((cause, 0) for cause in CAUSES)

    def crash_count(self, cause: str) -> int:
        return dict(self.crashes).get(cause, 0)

    def after(self, before: str, after: str, cause: str) -> "Counters":
        """Return the counters after one state change (``before`` -> ``after``)."""
        if after == State.STARTING:
            return replace(self, starts=self.starts + 1, restarts=self.restarts + (before == State.CRASHED))
        if after == State.CRASHED:
            return replace(self, crashes=tuple((c, n + (c == cause)) for c, n in self.crashes))
        return self

    def as_dict(self) -> Dict[str, Any]:
        """The form written into the state file (and read back by ``from_dict``)."""
        return {"starts": self.starts, "restarts": self.restarts, "crashes": dict(self.crashes)}

    @classmethod
    def from_dict(cls, saved: Any) -> "Counters":
        """Counters carried over from a previous listener's state file (bad values ignored)."""
        if not isinstance(saved, dict):
            return cls()
        crashes = saved["crashes"] if isinstance(saved.get("crashes"), dict) else {}
        return cls(starts=_count(saved.get("starts")), restarts=_count(saved.get("restarts")),
                   crashes=tuple((c, _count(crashes.get(c))) for c in CAUSES))
