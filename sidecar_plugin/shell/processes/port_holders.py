"""Who answers on the sidecar's port: its own tree, or someone else (``core.listener.identity`` decides what counts).

The kernel's socket table says which processes listen on the port (psutil);
a listener counts as the sidecar's only when it is the process supervisord
runs now or one of its descendants (a worker that ``setsid`` away is still
its parent's child). An orphan of an older tree, another server, or a socket
of another user (its pid is not visible) is not. Parentage, not birth time:
a worker its old parent respawned a few milliseconds before that parent was
killed was born "at the same time" as the new sidecar, to a clock tick, and
was once taken for it while it held the port.
"""

from __future__ import annotations

from typing import Optional, Set, Tuple

import psutil

from sidecar_plugin.shell.processes.procs import describe, tree_pids

WILDCARDS = ("0.0.0.0", "::", "")


def listeners(port: int, host: str) -> Tuple[Set[int], bool]:
    """Return (pids listening where a probe of host:port lands, whether some listener's pid is hidden).

    A sidecar on a wildcard host conflicts with every listener on the port (and is probed on
    loopback), so all of them count then.
    """
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
        if host not in WILDCARDS and ip not in WILDCARDS and ip != host and ip != f"::ffff:{host}":
            continue
        if c.pid:
            pids.add(c.pid)
        else:
            hidden = True
    return pids, hidden


def owner(port: int, host: str, root: Optional[int]) -> Tuple[bool, Optional[str]]:
    """Return (whether only the sidecar's tree listens on the port, who else does)."""
    pids, hidden = listeners(port, host)
    if not pids and not hidden:
        return False, "nobody (no process listens on the port)"
    ours = tree_pids(root)
    foreign = []
    for pid in sorted(pids):
        if pid in ours:
            continue
        if not psutil.pid_exists(pid):
            continue  # gone since the socket table was read: it answers nothing
        foreign.append(describe(pid))
    if hidden:
        foreign.append("a process of another user")
    return (not foreign), (", ".join(foreign) or None)
