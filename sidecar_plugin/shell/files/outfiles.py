"""The rendered files after writing: what apply rolls back to, what version runs, the log kept private.

Writing them is ``shell.render.filewrite``'s job. Everything here opens files
without following links and changes modes on the descriptor it opened: the
listener and apply may run as root beside a folder another user can write.
"""

from __future__ import annotations

import os
import stat
from typing import Dict, Optional, Sequence, Tuple

from sidecar_plugin.core.render.litellm_yaml import config_version
from sidecar_plugin.shell.files import safefs

Snapshot = Dict[str, Optional[Tuple[bytes, int, int, int]]]  # bytes, mode, uid, gid


def snapshot(paths: Sequence[str]) -> Snapshot:
    """Return each file's bytes, mode and owner (None: absent), to roll back to; never through a link."""
    snap: Snapshot = {}
    for path in paths:
        folder, name = os.path.split(os.path.abspath(path))
        try:
            dirfd = safefs.open_dir(folder)
        except FileNotFoundError:
            snap[path] = None
            continue
        try:
            data = safefs.read_file(dirfd, name, 16 << 20, shown=path)
            st = safefs.entry(dirfd, name)
        finally:
            os.close(dirfd)
        snap[path] = None if data is None or st is None else (data, st.st_mode & 0o777, st.st_uid, st.st_gid)
    return snap


def restore(snap: Snapshot) -> None:
    """Put every file of ``snap`` back as it was (atomically, owner and mode too); remove the ones that were absent."""
    for path, saved in snap.items():
        folder, name = os.path.split(os.path.abspath(path))
        dirfd = safefs.open_dir(folder)
        try:
            if saved is None:
                safefs.remove(dirfd, name)
            else:
                safefs.write_file(dirfd, name, saved[0], saved[1], (saved[2], saved[3]))
        finally:
            os.close(dirfd)


def file_version(path: str) -> Optional[str]:
    """Return ``config_version`` of the file at ``path``, or None when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            return config_version(fh.read())
    except OSError:
        return None


def keep_private(path: str) -> None:
    """Keep the sidecar log owner-only, also after supervisord rotated it (it may hold keys).

    On the descriptor, never through a link (the listener may run as root).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and st.st_uid == os.geteuid() and st.st_mode & 0o077:
            os.fchmod(fd, stat.S_IMODE(st.st_mode) & ~0o077)
    except OSError:
        pass
    finally:
        os.close(fd)
