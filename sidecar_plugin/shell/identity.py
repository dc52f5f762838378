"""Who answers on the sidecar's port: its own tree, or someone else (``core.identity`` decides what counts).

The kernel's socket table says which processes listen on the port (psutil);
a listener counts as the sidecar's when it is the process supervisord runs
now, one of its descendants, a process the tracker saw in its tree (same pid
*and* create time), or one carrying this render's marker born since the
sidecar started (a worker that ``setsid`` away). An orphan of an older tree,
another server, or a socket of another user (its pid is not visible) is not.
"""

from __future__ import annotations

from typing import Optional, Set, Tuple

import psutil

from sidecar_plugin.shell.reaper import BORN_SLACK, TreeTracker, _describe, _tree_pids, alive, born_at

WILDCARDS = ("0.0.0.0", "::", "")


def listeners(port: int, host: str) -> Tuple[Set[int], bool]:
    """Return (pids listening where a probe of host:port lands, whether some listener's pid is hidden)."""
    pids: Set[int] = set()
    hidden = False
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return pids, True
    for c in conns:
        if c.status != psutil.CONN_LISTEN or not c.laddr or c.laddr.port != port:
            continue
        ip = c.laddr.ip
        if ip not in WILDCARDS and ip != host and ip != f"::ffff:{host}":
            continue
        if c.pid:
            pids.add(c.pid)
        else:
            hidden = True
    return pids, hidden


def owner(port: int, host: str, root: Optional[int], tracker: TreeTracker) -> Tuple[bool, Optional[str]]:
    """Return (whether only the sidecar's tree listens on the port, who else does)."""
    pids, hidden = listeners(port, host)
    if not pids and not hidden:
        return False, "nobody (no process listens on the port)"
    ours = _tree_pids(root)
    root_born = None
    if root is not None:
        try:
            root_born = born_at(psutil.Process(root))
        except psutil.Error:
            root_born = None
    tracked = {pid for (pid, _), proc in list(tracker.procs.items()) if alive(proc)}
    foreign = []
    for pid in sorted(pids):
        if pid in ours:
            continue
        try:
            proc = psutil.Process(pid)
            # Out of the root's tree (setsid): ours only if born since the root (an older one is an orphan).
            if (pid in tracked or tracker.is_marked(proc)) and root_born is not None \
                    and born_at(proc) >= root_born - BORN_SLACK:
                continue
        except psutil.Error:
            continue
        foreign.append(_describe(pid))
    if hidden:
        foreign.append("a process of another user")
    return (not foreign), (", ".join(foreign) or None)
