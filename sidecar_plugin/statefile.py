"""The state file: its schema, an atomic writer, a cheap reader and the history.

The state file is the one truthful answer to "is the sidecar up?" for every
client on the host. It is rewritten whole (atomically) by the listener and
read, possibly per request, by the gateway: reading must stay in tens of
microseconds, so the reader does one read and one ``json.loads``.
"""

from __future__ import annotations

import enum
import errno
import fcntl
import json
import os
import stat
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from sidecar_plugin.atomic import write_atomic
from sidecar_plugin.errors import SidecarError
from sidecar_plugin.safefs import plain_mode

SCHEMA = 1
STALE_AFTER = 15.0
HISTORY_NAME = "history.jsonl"
HISTORY_MAX_BYTES = 256 * 1024
HISTORY_BACKUPS = 2


class State(str, enum.Enum):
    """The sidecar's lifecycle state; compare against names, not strings."""

    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    CRASHED = "crashed"

    def __str__(self) -> str:
        return self.value


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


def history_path(state_file: str) -> str:
    """Return where the history of state changes lives: beside the state file."""
    return os.path.join(os.path.dirname(os.path.abspath(state_file)), HISTORY_NAME)


def read_state(path: str, max_age: float = STALE_AFTER, now: Optional[float] = None) -> SidecarState:
    """Read the state file; raise StateUnavailable if missing, corrupt or foreign."""
    try:  # O_NONBLOCK: a FIFO put there must not hang a reader (supervisord's sidecar.getState reads this)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise StateUnavailable(f"{path}: not a regular file")
            raw = os.read(fd, 1 << 20)
        finally:
            os.close(fd)
    except FileNotFoundError:
        raise StateMissing(f"{path}: no state file (is the listener configured?)") from None
    except OSError as exc:
        raise StateUnavailable(f"{path}: {exc.strerror or exc}") from None
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise StateUnavailable(f"{path}: not valid JSON") from None
    return parse_state(doc, path, max_age, time.time() if now is None else now)


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
            is_stale=(now - heartbeat) > max_age,
            raw=doc,
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        raise StateUnavailable(f"{path}: not a schema {SCHEMA} state file") from None
    return result


def _num(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError("number expected")
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


def write_state(path: str, doc: Dict[str, Any]) -> None:
    """Write the state document atomically, 0644: clients of any user may read it."""
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8") + b"\n"
    write_atomic(path, data, 0o644)


def append_history(state_file: str, entry: Dict[str, Any],
                   max_bytes: int = HISTORY_MAX_BYTES, backups: int = HISTORY_BACKUPS) -> None:
    """Append one state change to history.jsonl, rotating it so it stays bounded."""
    path = history_path(state_file)
    line = json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n"
    try:
        size = os.path.getsize(path)
    except OSError:
        size = 0
    if size and size + len(line) > max_bytes:
        for n in range(backups, 0, -1):
            src = path if n == 1 else f"{path}.{n - 1}"
            if os.path.exists(src):
                os.replace(src, f"{path}.{n}")
    # never through a link: in a shared folder, someone else's history.jsonl -> /etc/passwd
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    try:
        _own_regular_file(fd, path)
        if stat.S_IMODE(os.fstat(fd).st_mode) != 0o644 and os.fstat(fd).st_uid == os.geteuid():
            plain_mode(fd, 0o644)  # readable by clients even in a folder whose default ACL is owner-only
        os.write(fd, line.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def read_history(state_file: str) -> List[Dict[str, Any]]:
    """Return the history entries, oldest first, across rotated files."""
    path = history_path(state_file)
    entries: List[Dict[str, Any]] = []
    for name in [f"{path}.{n}" for n in range(HISTORY_BACKUPS, 0, -1)] + [path]:
        try:
            with open(name, encoding="utf-8") as fh:
                entries.extend(json.loads(line) for line in fh if line.strip())
        except FileNotFoundError:
            continue
    return entries


def _own_regular_file(fd: int, path: str) -> None:
    """Refuse to write into anything but a regular file with one name (not a FIFO, not a hard link)."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
        raise OSError(errno.EPERM, "not a regular file with a single name", path)


class LockHeld(Exception):
    """Another listener already owns this state file."""


def lock_state_file(state_file: str) -> int:
    """Take an exclusive lock beside the state file; return its descriptor.

    Two listeners writing one state file would contradict each other; the
    second one refuses to run instead. The kernel drops the lock when the
    holder dies, so a restarted listener takes it over at once.
    """
    path = os.path.abspath(state_file) + ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    try:
        _own_regular_file(fd, path)
    except OSError:
        os.close(fd)
        raise
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = ""
        try:
            holder = os.pread(fd, 32, 0).decode().strip()
        except OSError:
            pass
        os.close(fd)
        raise LockHeld(f"{state_file} is already written by another listener"
                       + (f" (pid {holder})" if holder else "")) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd
