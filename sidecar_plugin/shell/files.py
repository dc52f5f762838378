"""Write rendered files: only what changed, atomically, with the right modes and owner.

Unchanged files are left untouched (mtime included), so tools that watch them,
and ``apply``, see a change only when there is one. ``snapshot``/``restore``
let apply put the previous files back when a new configuration does not come up.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Tuple

from sidecar_plugin.core.litellm_yaml import config_version
from sidecar_plugin.core.render import RenderedFile
from sidecar_plugin.shell.atomic import write_atomic

Snapshot = Dict[str, Optional[Tuple[bytes, int]]]


def write_rendered(files: Sequence[RenderedFile], owner: Optional[Tuple[int, int]] = None) -> List[Tuple[str, bool]]:
    """Write each file whose bytes or mode differ; return (path, changed) pairs.

    Unchanged files are left untouched (mtime included), so tools that watch
    them, and ``apply``, see a change only when there is one. ``owner``
    (uid, gid) is the user LiteLLM runs as: it must read the 0600 files.
    """
    result = []
    for f in files:
        changed = differs(f) or (owner is not None and _owner(f.path) != owner)
        if changed:
            write_atomic(f.path, f.data, f.mode)
            if owner is not None:
                os.chown(f.path, *owner)
        result.append((f.path, changed))
    return result


def prepare_log_file(path: str, owner: Optional[Tuple[int, int]] = None) -> None:
    """Create the sidecar log owner-only before supervisord opens it.

    LiteLLM may print a key when it fails; supervisord would create the file
    0644. It appends to an existing file, keeping its mode (the listener
    re-tightens it after supervisord rotates it).
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.fchmod(fd, 0o600)
        if owner is not None:
            os.fchown(fd, *owner)
    finally:
        os.close(fd)


def _owner(path: str) -> Tuple[int, int]:
    st = os.stat(path)
    return st.st_uid, st.st_gid


def differs(f: RenderedFile) -> bool:
    """Whether the file on disk is missing or has other bytes or another mode."""
    try:
        st = os.stat(f.path)
        with open(f.path, "rb") as fh:
            current = fh.read()
    except OSError:
        return True
    return current != f.data or (st.st_mode & 0o777) != f.mode


def file_version(path: str) -> Optional[str]:
    """Return ``config_version`` of the file at ``path``, or None when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            return config_version(fh.read())
    except OSError:
        return None


def snapshot(paths: Sequence[str]) -> Snapshot:
    """Return each file's bytes and mode (None: absent), to roll back to."""
    snap: Snapshot = {}
    for path in paths:
        try:
            with open(path, "rb") as fh:
                snap[path] = (fh.read(), os.stat(path).st_mode & 0o777)
        except FileNotFoundError:
            snap[path] = None
    return snap


def restore(snap: Snapshot) -> None:
    """Put every file of ``snap`` back as it was (atomically); remove the ones that were absent."""
    for path, saved in snap.items():
        if saved is None:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        else:
            write_atomic(path, saved[0], saved[1])


def keep_private(path: str) -> None:
    """Keep the sidecar log owner-only, also after supervisord rotated it (it may hold keys)."""
    try:
        if os.stat(path).st_mode & 0o077:
            os.chmod(path, 0o600)
    except OSError:
        pass
