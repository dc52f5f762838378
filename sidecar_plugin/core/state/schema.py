"""The state file's schema (version 1): what a reader may rely on.

Pure: a decoded document in, a checked ``SidecarState`` out, so every client
judges staleness and shape the same way, and the rules are unit-tested
without files. Reading and writing the file is ``shell.files.statefile``'s job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from sidecar_plugin.core.state.endpoint import base_url
from sidecar_plugin.errors import SidecarError
from sidecar_plugin.names import SCHEMA, State


class StateUnavailable(SidecarError):
    """The state file is missing, unreadable or not of the contract's schema."""


class StateMissing(StateUnavailable):
    """No state file yet: the listener has never run (reads as ``stopped``)."""


@dataclass(frozen=True)
class Health:
    ok: Optional[bool] = None
    checked_at: Optional[float] = None
    latency_ms: Optional[float] = None
    consecutive_failures: int = 0


@dataclass(frozen=True)
class SidecarState:
    """One reading of the state file; ``is_stale`` is judged at read time."""

    program: str
    state: State
    since: float
    updated_at: float
    heartbeat_at: float
    pid: Optional[int]
    port: int
    supervisor_state: Optional[str]
    health: Health
    error: Optional[str]
    log_tail: Tuple[str, ...]
    listener_pid: int
    is_stale: bool
    raw: Dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def is_running(self) -> bool:
        """True only when the file says running and the listener is alive."""
        return self.state is State.RUNNING and not self.is_stale


def parse_state(doc: Any, path: str, max_age: float, now: float) -> SidecarState:
    """Check a decoded state document against schema 1 and build a SidecarState."""
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise StateUnavailable(f"{path}: not a schema {SCHEMA} state file")
    try:
        state = State(doc["state"])
        health = doc.get("health") or {}
        tail = doc.get("log_tail") or []
        heartbeat = _num(doc["heartbeat_at"])
        result = SidecarState(
            program=_str(doc["program"]),
            state=state,
            since=_num(doc["since"]),
            updated_at=_num(doc["updated_at"]),
            heartbeat_at=heartbeat,
            pid=_opt_int(doc.get("pid")),
            port=_int(doc["port"]),
            supervisor_state=_opt_str(doc.get("supervisor_state")),
            health=Health(
                ok=health.get("ok") if isinstance(health.get("ok"), bool) else None,
                checked_at=_opt_num(health.get("checked_at")),
                latency_ms=_opt_num(health.get("latency_ms")),
                consecutive_failures=_int(health.get("consecutive_failures", 0)),
            ),
            error=_opt_str(doc.get("error")),
            log_tail=tuple(_str(line) for line in tail),
            listener_pid=_int(doc["listener_pid"]),
            # a heartbeat from the future (a clock stepped back, a hand-made file) proves nothing either
            is_stale=abs(now - heartbeat) > max_age,
            raw=doc,
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        raise StateUnavailable(f"{path}: not a schema {SCHEMA} state file") from None
    return result


def _num(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise TypeError("finite number expected")
    return float(v)


def _opt_num(v: Any) -> Optional[float]:
    return None if v is None else _num(v)


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError("integer expected")
    return v


def _opt_int(v: Any) -> Optional[int]:
    return None if v is None else _int(v)


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError("string expected")
    return v


def _opt_str(v: Any) -> Optional[str]:
    return None if v is None else _str(v)


def state_document(model: Any, opts: Any, now: float, listener_pid: int,
                   tree: Any, error: Optional[str], key_file: Optional[str] = None) -> Dict[str, Any]:
    """Return the state document of schema 1 for the model (plus the listener's own fields).

    ``tree`` is the sidecar's process identities ([pid, create time]: a client
    waiting for a stop checks they are gone), ``error`` the model's error
    already redacted. ``port_free`` is the listener's own check after a reap,
    so clients (and ``sidecar.getState`` inside supervisord) need no socket.
    ``base_url`` and ``key_file`` (a path, never the key) tell the gateway
    where to send its requests and where the key it sends is kept.
    """
    return {**_reading(model, opts, now, listener_pid, error), **_acting(model, opts, tree, key_file)}


def _reading(model: Any, opts: Any, now: float, listener_pid: int, error: Optional[str]) -> Dict[str, Any]:
    """The fields ``parse_state`` checks (and ``host``): what every reader of schema 1 relies on."""
    return {
        "schema": SCHEMA,
        "program": opts.program,
        "state": model.state.value,
        "since": model.since,
        "updated_at": now,
        "heartbeat_at": now,
        "pid": model.pid,
        "port": opts.port,
        "host": opts.host,
        "port_owner": opts.port_owner,  # "supervisord": the port stays open while LiteLLM is down
        "supervisor_state": model.supervisor_state,
        "health": {
            "ok": model.health_ok,
            "checked_at": model.checked_at,
            "latency_ms": model.latency_ms,
            "consecutive_failures": model.failures,
        },
        "error": error,
        "log_tail": list(model.log_tail),
        "listener_pid": listener_pid,
    }


def _acting(model: Any, opts: Any, tree: Any, key_file: Optional[str]) -> Dict[str, Any]:
    """The fields clients act on: the tree a stop waits out, where the gateway sends, the recovery under way."""
    return {
        "log_file": opts.log_file,
        "tree": [[pid, ctime] for pid, ctime in tree],
        "group": opts.group or opts.program,
        "counters": model.counters.as_dict(),
        "config_version": model.config_version,
        "port_free": model.port_free,
        "base_url": base_url(opts.host, opts.port),
        "key_file": key_file,
        # Recovery without a person (core.listener.retry): the current retry's number (0: none), when
        # the next try is due (null: none scheduled) and its delay.
        "retry": {"attempt": model.retry_attempt, "next_at": model.retry_at, "delay": model.retry_delay},
        # Who answers on the port when it is not the sidecar (core.listener.identity); null otherwise.
        "port_holder": model.port_holder,
    }
