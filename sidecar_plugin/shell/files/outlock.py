"""One render or apply at a time on an out-dir.

Two renders into one empty folder could each generate a master key and write
``master.key`` and ``litellm.yaml`` in an interleaved order (the key in one
differing from the key in the other); two applies could each roll back to a
snapshot taken partway through the other. The lock is ``flock`` on a file in
the out-dir, opened without following a link; the kernel drops it when its
holder dies, so a killed render never leaves the folder locked.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from typing import Iterator

from sidecar_plugin.shell.files import safefs
from sidecar_plugin.errors import SidecarError

LOCK_NAME = ".sidecar-plugin.lock"
WAIT = 30.0


class OutDirBusy(SidecarError):
    """Another render or apply kept the out-dir locked for longer than we wait."""


@contextlib.contextmanager
def out_dir_lock(out_dir: str, wait: float = WAIT) -> Iterator[None]:
    """Hold the out-dir's lock (creating the folder root-owned if needed); wait at most ``wait`` seconds."""
    dirfd = safefs.open_dir(out_dir, create=True)
    try:
        try:
            fd = os.open(LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600,
                         dir_fd=dirfd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise safefs.UnsafePath(errno.ELOOP, "is a symlink; refusing to follow it",
                                        os.path.join(out_dir, LOCK_NAME)) from None
            raise
    finally:
        os.close(dirfd)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise OutDirBusy(f"{out_dir}: another render or apply has held it for {wait:g} s; "
                                     "try again when it is done") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)
