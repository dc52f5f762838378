"""Blocking start/stop/wait, shared by the helper module, the CLI, apply and the supervisorctl plugin.

Each asks supervisord to act and then watches the state the listener
publishes: ``start`` returns when the sidecar answers healthy, ``stop`` when
supervisord has stopped it *and* the listener has reaped its tree and freed the
port. The waiting is written once, over a function that returns the state as
a dict, so the local client (state file) and the remote one
(``sidecar.getState``) behave the same. Every wait has a deadline.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Dict, List, Optional, TypeVar

from sidecar_plugin.core.listener.identity import holder_note
from sidecar_plugin.errors import BinaryNotFoundError, SidecarError, SidecarStartError
from sidecar_plugin.names import DEFAULT_HEALTH_TIMEOUT, GAVE_UP_STATES, STALE_AFTER, State

POLL = 0.05
REAP_GRACE = 5.0  # a crash is reported once the listener has reaped the tree (at most this long after)
# A wait with no timeout given still ends, after the listener's own verdict on a start (the health
# timeout, its outer bound) could have come: a slow start on a busy host is waited for, not abandoned.
DEFAULT_WAIT = DEFAULT_HEALTH_TIMEOUT + 30.0
GetState = Callable[[], Dict[str, Any]]
T = TypeVar("T")


def check_timeout(timeout: Optional[float], default: float = DEFAULT_WAIT) -> float:
    """Return a usable timeout: None takes ``default``; nan, inf, 0 and below are refused."""
    if timeout is None:
        return default
    if not math.isfinite(timeout) or timeout <= 0:
        raise SidecarError(f"timeout: must be a finite number of seconds above 0 (got {timeout})")
    return timeout


def poll(step: Callable[[], Optional[T]], timeout: float, on_timeout: Callable[[], Exception],
         interval: float = POLL) -> T:
    """Call ``step`` until it returns something other than None; raise ``on_timeout()`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        found = step()
        if found is not None:
            return found
        if time.monotonic() >= deadline:
            raise on_timeout()
        time.sleep(interval)


def start_done(doc: Dict[str, Any], requested_at: float, fresh: bool = False) -> Optional[bool]:
    """True: running. False: it crashed after the request. None: keep waiting.

    ``fresh``: only a ``running`` entered after the request counts (a restart
    must not be satisfied by the process it replaces).
    """
    if doc.get("is_stale"):
        return None
    state = doc.get("state")
    if state == State.RUNNING:
        return not fresh or float(doc.get("since") or 0) >= requested_at or None
    if state == State.CRASHED and float(doc.get("since") or 0) >= requested_at:
        return False
    return None


def retry_scheduled(doc: Dict[str, Any]) -> bool:
    """Whether the listener will start the sidecar again by itself (a retry is due)."""
    retry = doc.get("retry")
    return isinstance(retry, dict) and bool(retry.get("next_at"))


def stop_done(doc: Dict[str, Any]) -> bool:
    """True when the listener recorded the stop after reaping the whole tree and freeing the port,
    and will not start it again (no retry scheduled)."""
    if doc.get("is_stale"):
        return False
    return (doc.get("state") in (State.STOPPED, State.CRASHED)
            and doc.get("supervisor_state") in ("STOPPED", "EXITED", "FATAL", None)
            and not doc.get("tree") and doc.get("port_free") is not False and not retry_scheduled(doc))


def start_error(doc: Dict[str, Any]) -> SidecarError:
    """Turn a crashed state into the error a caller can act on: it names who else holds the port."""
    error = with_holder(doc.get("error") or "crashed", doc)
    tail = doc.get("log_tail") or ()
    text = (error + " " + " ".join(tail)).lower()
    if "can't find command" in text or "spawn error" in text and "not found" in text:
        return BinaryNotFoundError()
    return SidecarStartError(error, tail)


def with_holder(text: str, doc: Dict[str, Any]) -> str:
    """Return ``text`` naming the state's ``port_holder`` (another program on the port), once."""
    return holder_note(text, str(doc["port_holder"]) if doc.get("port_holder") else None) or text


def reaped(doc: Dict[str, Any]) -> bool:
    """Whether the listener has recorded its reap after the crash: it then knows who else holds the port."""
    return doc.get("port_free") is not None or bool(doc.get("port_holder"))


class _Unwritten:
    """Refuse to wait for a state file that nobody writes: no listener means no answer, ever."""

    def __init__(self, within: float) -> None:
        self.within = within
        self.since: Optional[float] = None

    def check(self, doc: Dict[str, Any], path: str = "") -> None:
        if doc.get("available", True) is not False or doc.get("state") != State.STOPPED:
            self.since = None
            return
        now = time.monotonic()
        self.since = self.since if self.since is not None else now
        if now - self.since >= self.within:
            where = f" {path}" if path else ""
            raise SidecarError(f"no state file{where} after {self.within:g} s: its listener is not writing it "
                               "(is the [eventlistener:...-health] running? supervisorctl status)")


def wait_started(get_state: GetState, requested_at: float, timeout: Optional[float],
                 fresh: bool = False, missing_for: float = STALE_AFTER, path: str = "") -> Dict[str, Any]:
    """Poll until running; raise SidecarStartError on a crash or when time runs out.

    A state file still missing after ``missing_for`` seconds ends the wait
    with a clear error: nothing is watching the sidecar, so nothing would
    ever say it runs.
    """
    limit = check_timeout(timeout)
    last: Dict[str, Any] = {}
    unwritten = _Unwritten(missing_for)
    crashed_at: List[float] = []

    def step() -> Optional[Dict[str, Any]]:
        last.clear()
        last.update(get_state())
        unwritten.check(last, path)
        verdict = start_done(last, requested_at, fresh)
        if verdict is False:
            crashed_at[:] = crashed_at or [time.monotonic()]
            if reaped(last) or time.monotonic() - crashed_at[0] >= REAP_GRACE:
                raise start_error(last)  # after the reap: "the port is held by pid N nginx", not a bare exit
        return dict(last) if verdict else None

    return poll(step, limit, lambda: SidecarStartError(
        with_holder(f"not running after {limit:g} s (state {last.get('state', 'unknown')})", last),
        last.get("log_tail") or ()))


def wait_stopped(get_state: GetState, timeout: Optional[float],
                 extra_check: Callable[[], bool] = lambda: True) -> Dict[str, Any]:
    """Poll until the listener has recorded a complete stop; raise SidecarError on timeout."""
    limit = check_timeout(timeout)
    last: Dict[str, Any] = {}

    def step() -> Optional[Dict[str, Any]]:
        last.clear()
        last.update(get_state())
        return dict(last) if stop_done(last) and extra_check() else None

    return poll(step, limit, lambda: SidecarError(
        f"not stopped after {limit:g} s (state {last.get('state', 'unknown')}, "
        f"supervisord {last.get('supervisor_state')}, {len(last.get('tree') or [])} process(es) of its tree left)"))


def wait_for_state(get_state: GetState, target: str, timeout: Optional[float]) -> Dict[str, Any]:
    """Poll until the (non-stale) state is ``target``; raise SidecarError when time runs out."""
    limit = check_timeout(timeout)
    last: Dict[str, Any] = {}
    began = time.time()

    def step() -> Optional[Dict[str, Any]]:
        last.clear()
        last.update(get_state())
        if last.get("state") == target and not last.get("is_stale"):
            return dict(last)
        if (target == State.RUNNING and last.get("state") == State.STOPPED and last.get("available", True)
                and last.get("supervisor_state") in GAVE_UP_STATES and float(last.get("since") or 0) >= began):
            # stopped on purpose while we waited: nothing will start it again
            raise SidecarError(f"stopped on purpose while waiting for {target}")
        if (target == State.RUNNING and last.get("state") == State.CRASHED
                and last.get("supervisor_state") in GAVE_UP_STATES and not retry_scheduled(last)):
            raise start_error(last)  # nothing will bring it back by itself: do not wait out the timeout
        return None

    return poll(step, limit, lambda: SidecarError(
        f"still {last.get('state', 'unknown')} after {limit:g} s (waiting for {target})"))
