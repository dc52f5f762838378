"""Wait for one process to exit, the moment it does.

Linux's pidfd wakes the waiter at the exit itself, well before supervisord's
one-second loop notices; without pidfd (an old kernel) it polls every 50 ms.
"""

from __future__ import annotations

import os
import select
import time

import psutil


def wait_for_exit(pid: int) -> None:
    """Return when ``pid`` has exited (at once if it already has)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except (AttributeError, OSError):
        fd = -1
    if fd >= 0:
        try:
            select.select([fd], [], [])
        finally:
            os.close(fd)
        return
    try:
        proc = psutil.Process(pid)
        while proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
            time.sleep(0.05)
    except psutil.Error:
        pass
