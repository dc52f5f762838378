"""After apply has converged: is every sidecar it manages up, and if not, what is each doing.

A converged supervisord is not a running sidecar: apply may have replaced only
the listener (a listener option changed) while the sidecar was crashed or in a
failing start, and reporting success then would tell a configuration tool that
all is well while nothing serves. So apply ends by waiting, within its
timeout, until each sidecar's state is settled, read only from a state file
the *current* listener wrote (``listener_pid`` is the pid supervisord gives
the listener now: a file the replaced listener wrote, or a stale one, says
nothing about the present).

Settled: ``running``; ``stopped`` (only an operator's stop is ``stopped``:
apply leaves it so, and that is no failure); ``crashed`` with nothing left to
bring it back (no retry scheduled and supervisord gave up). A sidecar still
``starting``, or ``crashed`` with a retry ahead, is waited for until the
deadline, then reported as it is.
"""

from __future__ import annotations

import time
import xmlrpc.client
from typing import Any, Dict, Optional

from sidecar_plugin.names import GAVE_UP_STATES, State
from sidecar_plugin.shell.render.build import Rendered
from sidecar_plugin.shell.supervisord.control import POLL, retry_scheduled
from sidecar_plugin.shell.files.statefile import state_dict


def listener_pid(rpc: Any, rendered: Rendered) -> Optional[int]:
    """The pid supervisord runs the render's listener as now (None: not running or not known)."""
    name = rendered.listener
    try:
        return int(rpc.supervisor.getProcessInfo(f"{name}:{name}").get("pid") or 0) or None
    except (OSError, xmlrpc.client.Error, ValueError, TypeError):
        return None


def current(doc: Dict[str, Any], pid: Optional[int]) -> bool:
    """Whether ``doc`` is the word of the listener running now: written by ``pid``, not stale."""
    return bool(pid) and bool(doc.get("available")) and not doc.get("is_stale") and doc.get("listener_pid") == pid


def settled(doc: Dict[str, Any]) -> bool:
    """Whether waiting longer cannot change what apply reports of this sidecar."""
    state = doc.get("state")
    if state in (State.RUNNING, State.STOPPED):
        return True
    return state == State.CRASHED and not retry_scheduled(doc) and doc.get("supervisor_state") in GAVE_UP_STATES


def wait_settled(rendered: Rendered, rpc: Any, timeout: float) -> Dict[str, Dict[str, Any]]:
    """Return program -> its state as the current listener last wrote it ({}: it wrote none) once all
    are settled, or at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        pid = listener_pid(rpc, rendered)
        docs = {s.program: state_dict(s.state_file) for s in rendered.sidecars}
        docs = {p: (d if current(d, pid) else {}) for p, d in docs.items()}
        if all(d and settled(d) for d in docs.values()) or time.monotonic() >= deadline:
            return docs
        time.sleep(POLL * 4)
