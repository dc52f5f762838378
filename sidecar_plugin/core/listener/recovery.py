"""A listener's restart: rebuild the model from supervisord and the previous state file.

A listener restart (killed, upgraded, supervisord restarted) must neither
invent a transition (a ``running`` sidecar read again is not a new start, and
is not counted) nor forget one: the counters, the config version the sidecar
runs, a crash's reason and a retry under way are all carried over from the
file the previous listener wrote.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Optional

from sidecar_plugin.core.listener import retry
from sidecar_plugin.core.listener.actions import CaptureLogTail, Result, Write, watch
from sidecar_plugin.core.listener.counters import Counters, crash_cause
from sidecar_plugin.core.listener.inputs import Recover
from sidecar_plugin.core.listener.model import Model
from sidecar_plugin.core.listener.transitions import crash, enter, reap
from sidecar_plugin.names import LIVE_STATES, State


def recover_input(prior: Optional[Any], supervisor_state: Optional[str], pid: Optional[int]) -> Recover:
    """The ``Recover`` input: what supervisord says now, and what the previous file (a ``StateView``) said."""
    if prior is None:
        return Recover(supervisor_state=supervisor_state, pid=pid)
    return Recover(
        supervisor_state=supervisor_state, pid=pid, prior_state=prior.state, prior_since=prior.since,
        prior_pid=prior.pid, prior_error=prior.error, prior_log_tail=prior.log_tail,
        prior_counters=prior.raw.get("counters"), prior_config_version=prior.raw.get("config_version"),
        prior_retry=prior.raw.get("retry"))


def on_recover(model: Model, r: Recover, now: float) -> Result:
    """Rebuild the model; a retry the previous listener had under way keeps its count."""
    found = _on_recover_retrying(model, r, now)
    if found is not None:
        return found
    after, actions = _rebuilt(model, r, now)
    attempt = retry.prior_attempt(r.prior_retry)[0]
    if after.state is not State.STOPPED and attempt:  # a try was under way: keep counting
        after = replace(after, retry_attempt=attempt)
    return after, actions


def _on_recover_retrying(model: Model, r: Recover, now: float) -> Optional[Result]:
    """A listener restarted while the previous one was retrying: keep the count and the time of the next try.

    supervisord says STOPPED (the previous listener stopped it after a failed
    start), STOPPING (it is stopping it still: ``apply`` restarted the listener
    meanwhile) or FATAL; without the previous file's ``retry`` a stopped or
    stopping sidecar would read as an operator's stop and never come back.
    Only an operator stops a sidecar for good.
    """
    attempt, next_at, delay = retry.prior_attempt(r.prior_retry)
    s = r.supervisor_state
    if not (attempt and r.prior_state is State.CRASHED and s in ("STOPPING", "STOPPED", "FATAL")):
        return None
    model = replace(model, state=State.CRASHED, since=r.prior_since if r.prior_since is not None else now,
                supervisor_state=s, pid=r.pid if s == "STOPPING" else None, counters=_adopted(r),
                error=r.prior_error, log_tail=r.prior_log_tail, config_version=r.prior_config_version,
                version_pid=r.prior_pid, halted="timeout" if s in ("STOPPING", "STOPPED") else None,
                stopping=s == "STOPPING", retry_attempt=attempt,
                retry_at=next_at if next_at is not None else now, retry_delay=delay)
    if s == "STOPPING":  # the reap comes with its STOPPED event
        return model, watch(r.pid) + [Write()]
    return model, [Write(), reap(model, None, now)]


def _rebuilt(model: Model, r: Recover, now: float) -> Result:
    """Rebuild from supervisord and the old file without a false transition."""
    s = r.supervisor_state
    same_pid = r.pid is not None and r.pid == r.prior_pid
    model = replace(model, supervisor_state=s, pid=r.pid, counters=_adopted(r),
                config_version=r.prior_config_version, version_pid=r.prior_pid,
                answered_at=now)  # hang windows count from now: the old listener's silence is not the sidecar's
    if s in LIVE_STATES:
        # supervisord may still say STARTING (startsecs) of a sidecar already healthy:
        # the same pid in the same live state is kept as it was, ``since`` included.
        if same_pid and r.prior_state in (State.RUNNING, State.STARTING) and r.prior_since is not None:
            model = replace(model, state=r.prior_state, since=r.prior_since,
                        starting_since=r.prior_since if r.prior_state is State.STARTING else None)
        else:
            model = enter(model, State.STARTING, now, starting_since=now)
        # Reap: a tree the previous listener recorded under another pid (supervisord
        # itself was restarted) is orphaned and may hold the port; the live one is spared.
        return _counted(model, r), watch(r.pid) + [Write(), reap(model, None, now)]
    if s in ("STOPPING", "STOPPED", None) or s == "EXITED" and r.prior_state is State.STOPPED:
        since = r.prior_since if r.prior_state is State.STOPPED and r.prior_since is not None else now
        model = replace(model, state=State.STOPPED, since=since, stopping=s is not None)
        return _counted(model, r), [reap(model, None, now)]
    # EXITED, BACKOFF, FATAL, UNKNOWN: it is down and not on purpose.
    if r.prior_state is State.CRASHED and r.prior_since is not None:
        model = replace(model, state=State.CRASHED, since=r.prior_since, error=r.prior_error, log_tail=r.prior_log_tail)
        return model, [reap(model, None, now)]
    model = crash(model, now, f"found {s} when the listener started")
    return _counted(model, r), [CaptureLogTail(), reap(model, None, now)]


def _adopted(r: Recover) -> Counters:
    """The counters the previous listener wrote: a listener restart does not reset them."""
    return Counters.from_dict(r.prior_counters)


def _counted(model: Model, r: Recover) -> Model:
    """Count a recovery only as a change from what the old file said (none: stopped)."""
    before = r.prior_state or State.STOPPED
    if before is model.state:
        return model
    cause = crash_cause(model.halted, model.supervisor_state, recovering=True)
    return replace(model, counters=model.counters.after(before.value, model.state.value, cause))
