"""Carry out the machine's ``Reap``: kill what survived the sidecar, spare what supervisord runs now.

What supervisord runs now is asked *after* the victims are chosen (it may
have restarted the program before its STARTING event reached the listener),
so a sidecar spawned during the scan is known before the kill. What was done
is logged for the operator and fed back to the machine as ``Reaped``.
"""

from __future__ import annotations

from typing import Any

from sidecar_plugin.core import machine as m
from sidecar_plugin.names import LIVE_STATES
from sidecar_plugin.shell.link import SupervisorLink
from sidecar_plugin.shell.reaper import TreeTracker


def reap(tracker: TreeTracker, link: SupervisorLink, port: int, action: m.Reap, log: Any) -> m.Reaped:
    """Reap the tree's survivors as ``action`` says; return what the machine must know."""
    def live() -> tuple:
        info = link.process_info()
        pid = info.get("pid") if info and info.get("statename") in LIVE_STATES else None
        return (pid,) if pid else ()

    spare = (action.spare,) if action.spare else ()
    result = tracker.reap(port, spare_roots=spare, before=action.before, live=live)
    if result.killed:
        log.warning("reaped %d orphaned process(es) of the sidecar: %s", len(result.killed),
                    " ".join(map(str, result.killed)))
    if result.survivors:
        log.error("could not kill: %s", " ".join(map(str, result.survivors)))
    if result.foreign_holders:
        log.error("port %d is held by a process outside the sidecar: %s", port, ", ".join(result.foreign_holders))
    return m.Reaped(killed=len(result.killed), foreign_holders=result.foreign_holders, port_free=result.port_free)
