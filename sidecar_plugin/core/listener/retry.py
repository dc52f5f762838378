"""Recovery without a person: when and how often the listener starts a sidecar that is down for good.

supervisord retries a failing start only ``startretries`` times, then leaves
the program FATAL; a sidecar the listener itself stopped (it did not become
healthy in time) stays STOPPED. Either way nothing would ever try again, and
a server rebooted under load (LiteLLM then needs longer than its health
timeout) would be left without its sidecar until someone logs in. So, like
Kubernetes' CrashLoopBackOff and systemd's ``Restart=`` with
``RestartSec``/``RestartSteps``, the listener starts it again after a delay
that doubles from ``first`` up to ``cap``, and forgets the count once the
sidecar has run healthy for ``reset_after``. An operator's stop is never
undone: it is the state ``stopped``, and nothing here starts a stopped sidecar.

Pure: the schedule and the rules on the machine's model, tested as data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, List, Optional, Tuple

from sidecar_plugin.core.options.table import DEFAULTS
from sidecar_plugin.names import State

# The options' defaults (core.options.table: Kubernetes' CrashLoopBackOff numbers).
RETRY_DELAY, RETRY_MAX_DELAY, RETRY_RESET_AFTER = (DEFAULTS[k] for k in ("retry_delay", "retry_max_delay",
                                                                         "retry_reset_after"))
# A start the listener asked for must show up (supervisord's STARTING) within this, else it asks again later.
START_SEEN_WITHIN = 30.0


@dataclass(frozen=True)
class Backoff:
    """The retry schedule: ``first`` doubling up to ``cap``; healthy for ``reset_after`` forgets the count."""

    first: float = RETRY_DELAY
    cap: float = RETRY_MAX_DELAY
    reset_after: float = RETRY_RESET_AFTER

    def delay(self, attempt: int) -> float:
        """Return the delay before retry number ``attempt`` (1, 2, ...)."""
        doublings = min(max(attempt, 1) - 1, 62)  # 2**62 s is beyond any cap; no float overflow
        return min(self.cap, self.first * math.ldexp(1.0, doublings))


def gave_up(model: Any) -> bool:
    """Whether nothing but the listener will bring the crashed sidecar back.

    supervisord gave up (FATAL), or the listener stopped it itself (it did not
    become healthy in time). An exit after a start is supervisord's to restart
    (``autorestart``), a BACKOFF is still being retried by supervisord.
    """
    return model.state is State.CRASHED and (model.supervisor_state == "FATAL" or model.halted == "timeout")


def schedule(model: Any, now: float, backoff: Backoff) -> Any:
    """Return the model with the next retry scheduled."""
    attempt = model.retry_attempt + 1
    delay = backoff.delay(attempt)
    return replace(model, retry_attempt=attempt, retry_at=now + delay, retry_delay=delay, retry_asked_at=None)


def settle(before: Any, after: Any, now: float, backoff: Backoff) -> Any:
    """Apply the retry rules to the model a transition produced (whatever input caused it).

    - stopped (an operator's stop, or never started): no retry, the count forgotten;
    - a new start seen (STARTING): the scheduled retry is done, the count is kept;
    - crashed for good with nothing scheduled: schedule the next retry.
    """
    if after.state is State.STOPPED:
        if after.retry_attempt or after.retry_at is not None or after.retry_asked_at is not None:
            return replace(after, retry_attempt=0, retry_at=None, retry_delay=None, retry_asked_at=None)
        return after
    if after.state is State.STARTING and before.state is not State.STARTING:
        return replace(after, retry_at=None, retry_delay=None, retry_asked_at=None)
    if gave_up(after) and after.retry_at is None and after.retry_asked_at is None:
        return schedule(after, now, backoff)
    return after


def on_tick(model: Any, now: float, backoff: Backoff) -> Tuple[Any, List[str]]:
    """Judge the retry timers; return the model and what to do ("start", "write").

    The scheduled time stays published until the start is seen, so a client
    waiting for a stop never mistakes "about to start" for "stopped".
    """
    if model.state is State.CRASHED and model.retry_at is not None:
        if model.retry_asked_at is None and now >= model.retry_at:
            return replace(model, retry_asked_at=now), ["start"]
        if model.retry_asked_at is not None and now - model.retry_asked_at >= START_SEEN_WITHIN:
            # supervisord never started it (unreachable, refused): try again later, counted.
            return schedule(model, now, backoff), ["write"]
    if (model.state is State.RUNNING and model.retry_attempt and model.health_ok
            and now - model.since >= backoff.reset_after):
        return replace(model, retry_attempt=0, retry_delay=None), ["write"]
    return model, []


def _finite(value: Any) -> Optional[float]:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def prior_attempt(saved: Any) -> Tuple[int, Optional[float], Optional[float]]:
    """Return (attempt, next_at, delay) of a previous listener's ``retry`` field (bad values: none)."""
    if not isinstance(saved, dict):
        return 0, None, None
    attempt = saved.get("attempt")
    attempt = attempt if isinstance(attempt, int) and not isinstance(attempt, bool) and attempt > 0 else 0
    return attempt, _finite(saved.get("next_at")), _finite(saved.get("delay"))

