"""The moves every decision of the machine is made of: enter a state, record a crash, ask for a reap.

Shared by the rule modules (``lifecycle``, ``health``, ``recovery``) so that
"``since`` changes only when the state does" and "a reap spares what
supervisord runs now" are said once.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Optional

from sidecar_plugin.core.listener.actions import Reap
from sidecar_plugin.core.listener.model import Model
from sidecar_plugin.names import LIVE_STATES, State


def enter(model: Model, state: State, now: float, **changes: Any) -> Model:
    """Move to ``state``; ``since`` changes only when the state does."""
    since = model.since if model.state is state else now
    return replace(model, state=state, since=since, **changes)


def crash(model: Model, now: float, error: str, **changes: Any) -> Model:
    """Enter ``crashed`` with the reason the state file and the operator will read."""
    return enter(model, State.CRASHED, now, error=error, **changes)


def reap(model: Model, at: Optional[float], now: float) -> Reap:
    """Reap what was born before the exit; spare the process supervisord runs now, if the model knows it."""
    return Reap(before=at if at is not None else now,
                spare=model.pid if model.supervisor_state in LIVE_STATES else None)
