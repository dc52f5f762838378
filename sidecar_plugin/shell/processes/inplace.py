"""A restart without a wait: the launcher re-executes itself in place (SIGUSR2), its old workers serving meanwhile.

The launcher (``shell.litellm_launch.reexec``) keeps its pid, hands the
sockets over and drains its previous workers once every new one serves. It
can when it supervises its workers (more than one, ``--max_requests_before_restart``
or ``--worker_control``); a launcher serving alone, a wrapper or another
``--binary`` cannot, and a restart is then supervisord's stop-then-start.
"""

from __future__ import annotations

import time
from typing import Callable, List, Optional, Set

import psutil

from sidecar_plugin.errors import SidecarError
from sidecar_plugin.shell.processes.procs import alive, descendants

SUPERVISING = ("--num_workers", "--max_requests_before_restart", "--worker_control")


def replaceable(pid: int) -> bool:
    """Whether ``pid`` is the sidecar's launcher supervising its workers (it then re-executes on SIGUSR2)."""
    try:
        argv = psutil.Process(pid).cmdline()
    except psutil.Error:
        return False
    return supervising(argv)


def supervising(argv: List[str]) -> bool:
    """Whether ``argv`` runs the launcher supervising its workers: its image can be replaced in place."""
    if not any(a.rstrip("/").endswith("litellm_launch") for a in argv):
        return False
    workers = argv[argv.index("--num_workers") + 1] if "--num_workers" in argv[:-1] else "1"
    return workers != "1" or any(flag in argv for flag in SUPERVISING[1:])


def workers(pid: int) -> Set[int]:
    """The live (not zombie) children of ``pid``."""
    try:
        kids = descendants(psutil.Process(pid), recursive=False)
    except psutil.Error:
        return set()
    return {kid.pid for kid in kids if alive(kid)}


def wait_replaced(pid: int, old: Set[int], running: Callable[[], bool], timeout: float) -> None:
    """Wait until ``pid`` serves with new workers alone: every old one drained. SidecarError when it does not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid):
            raise SidecarError(f"the sidecar's main process {pid} exited during the restart; "
                               "supervisord starts it again")
        now = workers(pid)
        if now and not now & old and running():
            return
        time.sleep(0.2)
    left: Optional[Set[int]] = workers(pid) & old
    raise SidecarError(f"the restart did not finish in {timeout:g} s (previous workers still there: "
                       f"{' '.join(map(str, sorted(left or ()))) or 'none'}; no new worker serves)")
