"""Write files atomically, so another process never reads half a file.

The state file is read by clients many times a second and the rendered
configuration by supervisord and LiteLLM: a reader must see either the old
bytes or the new ones, never a mix. Hence: temp file in the same folder
(same filesystem, so rename is atomic), fsync, chmod, rename, fsync the folder.
"""

from __future__ import annotations

import os
import tempfile

from sidecar_plugin.shell.files.safefs import plain_mode


def write_atomic(path: str, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data``, created with ``mode`` from the first byte.

    The temp file is created 0600 by mkstemp and chmod-ed before rename, so a
    secret file is never readable by others, not even for an instant.
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            plain_mode(fh.fileno(), mode)  # exactly ``mode``, whatever ACL the folder passes on
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(folder)


def _fsync_dir(folder: str) -> None:
    """Make the rename itself durable; not every filesystem allows it."""
    try:
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
