"""Carry out the machine's ``Reap``: kill what survived the sidecar, spare what supervisord runs now.

What supervisord runs now (every program's pid: ``getAllProcessInfo``) is
asked *after* the victims are chosen (it may have restarted the program
before its STARTING event reached the listener), so a sidecar spawned during
the scan is known before the kill. What was done is logged for the operator
and fed back to the machine as ``Reaped``.
"""

from __future__ import annotations

from typing import Any, List, Optional

from sidecar_plugin.core.listener import machine as m
from sidecar_plugin.shell.listener import supervisord_socket
from sidecar_plugin.shell.supervisord.link import SupervisorLink
from sidecar_plugin.shell.processes.tree_tracker import TreeTracker


def reap(tracker: TreeTracker, link: SupervisorLink, port: int, action: m.Reap, log: Any,
         drainer: Optional[supervisord_socket.Drainer] = None, stopping: bool = False) -> m.Reaped:
    """Reap the tree's survivors as ``action`` says; return what the machine must know.

    With a ``drainer`` (supervisord owns the socket), the orphans of a tree
    that exited unexpectedly serve on until the replacement does
    (``supervisord_socket.defer_reap``); a stop reaps as usual, supervisord excepted.
    """
    def live() -> Optional[List[int]]:
        infos = link.call("getAllProcessInfo")
        if not isinstance(infos, list):
            return None  # no answer: the reaper falls back on birth times
        return [int(i["pid"]) for i in infos if isinstance(i, dict) and int(i.get("pid") or 0) > 0]

    if drainer is not None and not stopping:
        return supervisord_socket.defer_reap(tracker, link, port, action, drainer, live)
    draining = tuple(drainer.busy()) if drainer is not None else ()
    keepers = (supervisord_socket.supervisord_pid(link),) + draining if drainer is not None else ()
    spare = ((action.spare,) if action.spare else ()) + draining
    result = tracker.reap(port, spare_roots=spare, before=action.before, live=live, keepers=keepers)
    if result.killed:
        log.warning("reaped %d orphaned process(es) of the sidecar: %s", len(result.killed),
                    " ".join(map(str, result.killed)))
    if result.survivors:
        log.error("could not kill: %s", " ".join(map(str, result.survivors)))
    if result.foreign_holders:
        log.error("port %d is held by a process outside the sidecar: %s", port, ", ".join(result.foreign_holders))
    return m.Reaped(killed=len(result.killed), foreign_holders=result.foreign_holders, port_free=result.port_free)
