"""The state file on disk: an atomic writer, a cheap reader, the history and the lock.

The state file is the one truthful answer to "is the sidecar up?" for every
client on the host. It is rewritten whole (atomically) by the listener and
read, possibly per request, by the gateway: reading must stay in tens of
microseconds, so the reader does one read and one ``json.loads``. What the
document must hold is ``core.state.schema``'s business.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from sidecar_plugin.core.state.endpoint import with_base_url
from sidecar_plugin.core.state.schema import SidecarState, StateMissing, StateUnavailable, parse_state
from sidecar_plugin.errors import SidecarError
from sidecar_plugin.names import HISTORY_NAME, STALE_AFTER, State
from sidecar_plugin.shell.files.atomic import write_atomic
from sidecar_plugin.shell.files.safefs import UnsafePath, plain_mode

if TYPE_CHECKING:
    import logging

HISTORY_MAX_BYTES = 256 * 1024
MAX_STATE_BYTES = 128 * 1024  # 40 log lines of 500 characters and the rest fit many times over
HISTORY_BACKUPS = 2


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
            raw = os.read(fd, MAX_STATE_BYTES + 1)
        finally:
            os.close(fd)
    except FileNotFoundError:
        raise StateMissing(f"{path}: no state file (is the listener configured?)") from None
    except OSError as exc:
        raise StateUnavailable(f"{path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_STATE_BYTES:  # the listener writes a few KB; a big file is not its, and costs supervisord
        raise StateUnavailable(f"{path}: larger than {MAX_STATE_BYTES // 1024} KiB, not a state file")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise StateUnavailable(f"{path}: not valid JSON") from None
    return parse_state(doc, path, max_age, time.time() if now is None else now)


def prior_state(path: str, program: str) -> Optional[SidecarState]:
    """The file a previous listener of ``program`` left, however old; None if there is none of its own."""
    try:
        prior = read_state(path, max_age=float("inf"))
    except StateUnavailable:
        return None
    return prior if prior.program == program else None


def effective_state(path: str, max_age: float = STALE_AFTER) -> State:
    """Return the state to act on: STOPPED with no file yet, CRASHED if stale or corrupt."""
    try:
        st = read_state(path, max_age=max_age)
    except StateMissing:
        return State.STOPPED
    except StateUnavailable:
        return State.CRASHED
    return State.CRASHED if st.is_stale else st.state


def state_dict(path: str, max_age: float = STALE_AFTER) -> Dict[str, Any]:
    """Return the state file as a dict with ``is_stale``; a placeholder when unavailable."""
    try:
        st = read_state(path, max_age=max_age)
    except StateMissing:
        return {"state": State.STOPPED.value, "available": False, "is_stale": False, "error": None, "tree": []}
    except StateUnavailable as exc:
        return {"state": State.CRASHED.value, "available": False, "is_stale": True, "error": str(exc), "tree": []}
    doc = with_base_url(dict(st.raw))
    doc["is_stale"] = st.is_stale
    doc["available"] = True
    doc["recorded_state"] = doc.get("state")
    if st.is_stale:  # nothing may report running from a stale file: the listener is not there to say so
        doc["state"] = State.CRASHED.value
        doc["error"] = f"the listener has not refreshed the state for over {max_age:g} s (state is stale)"
    return doc


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
        raise UnsafePath(errno.EPERM, "not a regular file with a single name", path)


class LockHeld(SidecarError):
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


def own_state_file(state_file: str, log: logging.Logger, retry_every: float = 1.0) -> bool:
    """Own the state file, or say why not: two listeners for one program would contradict each other.

    Only another listener's lock is a reason to refuse (an expected exit, so
    supervisord does not restart us in a loop). A missing folder (under /run,
    emptied at boot) is created; one that cannot be created yet, or a lock
    file that cannot be opened, is waited for: exiting would leave the
    sidecar running unwatched, and an expected exit would never be retried.
    """
    folder = os.path.dirname(os.path.abspath(state_file))
    deadline = time.monotonic() + 3.0
    waiting = ""
    while True:
        try:
            lock_state_file(state_file)
            if waiting:
                log.info("%s is usable now: watching the sidecar", folder)
            return True
        except LockHeld as exc:
            if time.monotonic() >= deadline:
                log.error("refusing to run: %s; two listeners for one program would contradict each other", exc)
                return False
            time.sleep(0.2)
            continue
        except FileNotFoundError:
            try:
                os.makedirs(folder, mode=0o755, exist_ok=True)
                log.warning("the state folder %s did not exist: created it", folder)
                continue
            except OSError as exc:
                why = f"the state folder {folder} does not exist and cannot be created ({exc.strerror or exc})"
        except OSError as exc:
            why = f"cannot lock {state_file}.lock ({exc.strerror or exc})"
        if why != waiting:
            log.error("%s: waiting for it (checking every %g s); the sidecar is not watched until then",
                      why, retry_every)
            waiting = why
        time.sleep(retry_every)
