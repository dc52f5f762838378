"""Blocking start/stop, shared by the helper module and the supervisorctl plugin.

Both ask supervisord to act and then watch the state the listener publishes:
``start`` returns when the sidecar answers healthy, ``stop`` when supervisord
has stopped it *and* the listener has reaped its tree and freed the port. The
waiting is written once, over a function that returns the state as a dict,
so the local client (state file) and the remote one (``sidecar.getState``)
behave the same.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Optional

from sidecar_plugin.errors import BinaryNotFoundError, SidecarError, SidecarStartError

POLL = 0.05
GAVE_UP = ("FATAL", "STOPPED")
GetState = Callable[[], Dict[str, Any]]
_MISSING_BINARY = ("can't find command", "not found", "no such file")


def start_done(doc: Dict[str, Any], requested_at: float, fresh: bool = False) -> Optional[bool]:
    """True: running. False: it crashed after the request. None: keep waiting.

    ``fresh``: only a ``running`` entered after the request counts (a restart
    must not be satisfied by the process it replaces).
    """
    if doc.get("is_stale"):
        return None
    state = doc.get("state")
    if state == "running":
        return not fresh or float(doc.get("since") or 0) >= requested_at or None
    if state == "crashed" and float(doc.get("since") or 0) >= requested_at:
        return False
    return None


def stop_done(doc: Dict[str, Any]) -> bool:
    """True when the listener recorded the stop after reaping the whole tree."""
    if doc.get("is_stale"):
        return False
    return doc.get("state") in ("stopped", "crashed") and doc.get("supervisor_state") in (
        "STOPPED", "EXITED", "FATAL", None) and not doc.get("tree")


def wait_started(get_state: GetState, requested_at: float, timeout: Optional[float],
                 fresh: bool = False) -> Dict[str, Any]:
    """Poll until running; raise SidecarStartError on a crash or when time runs out."""
    deadline = None if timeout is None else time.monotonic() + timeout
    doc: Dict[str, Any] = {}
    while True:
        doc = get_state()
        verdict = start_done(doc, requested_at, fresh)
        if verdict:
            return doc
        if verdict is False:
            raise start_error(doc)
        if deadline is not None and time.monotonic() >= deadline:
            raise SidecarStartError(f"not running after {timeout:g} s (state {doc.get('state', 'unknown')})",
                                    doc.get("log_tail") or ())
        time.sleep(POLL)


def start_error(doc: Dict[str, Any]) -> SidecarError:
    """Turn a crashed state into the error a caller can act on."""
    error = doc.get("error") or "crashed"
    tail = doc.get("log_tail") or ()
    text = (error + " " + " ".join(tail)).lower()
    if "can't find command" in text or "spawn error" in text and "not found" in text:
        return BinaryNotFoundError()
    return SidecarStartError(error, tail)


def wait_stopped(get_state: GetState, timeout: float, extra_check: Callable[[], bool] = lambda: True) -> Dict[str, Any]:
    """Poll until the listener has recorded a complete stop; raise SidecarError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        doc = get_state()
        if stop_done(doc) and extra_check():
            return doc
        if time.monotonic() >= deadline:
            raise SidecarError(f"not stopped after {timeout:g} s (state {doc.get('state', 'unknown')}, "
                               f"supervisord {doc.get('supervisor_state')}, "
                               f"{len(doc.get('tree') or [])} process(es) of its tree left)")
        time.sleep(POLL)


def is_spawn_error_missing_binary(fault_text: str) -> bool:
    """Whether supervisord's spawn error says the command does not exist."""
    low = fault_text.lower()
    return any(s in low for s in _MISSING_BINARY)


def wait_for_state(get_state: GetState, target: str, timeout: Optional[float]) -> Dict[str, Any]:
    """Poll until the (non-stale) state is ``target``; raise SidecarError when time runs out."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        doc = get_state()
        if doc.get("state") == target and not doc.get("is_stale"):
            return doc
        if target == "running" and doc.get("state") == "crashed" and doc.get("supervisor_state") in GAVE_UP:
            raise start_error(doc)  # nothing will bring it back by itself: do not wait out the timeout
        if deadline is not None and time.monotonic() >= deadline:
            raise SidecarError(f"still {doc.get('state', 'unknown')} after {timeout:g} s (waiting for {target})")
        time.sleep(POLL)
