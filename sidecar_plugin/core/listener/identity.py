"""Health that proves identity: an answer on the port counts only if the sidecar's own tree gave it.

A health probe only says that *something* on the port answered. When another
server holds the port (the sidecar then fails to bind and exits), its answers
would make the state ``running`` and the gateway would send its master key
there. So the shell looks up who listens on the port (psutil: pid and create
time against the tracked tree) and fills ``Probe.own``; an answer that is not
the sidecar's own counts as a failed probe, and the state names the holder.

Looking up the port's listeners costs a scan of /proc: it is done for every
healthy answer while the sidecar starts (the moment ``running`` is decided)
and then every ``Config.identify_every`` seconds while it runs.

Pure: the rules on the model, tested as data.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Optional, Tuple

from sidecar_plugin.names import State


def must_identify(model: Any, now: float, every: float) -> bool:
    """Whether a healthy answer needs its holder checked before it counts."""
    if model.state is not State.RUNNING:
        return True  # ``running`` is decided on this answer
    return model.identified_at is None or now - model.identified_at >= every


def judged(model: Any, probe: Any, now: float) -> Tuple[Any, Any]:
    """Return (model, probe) once the holder is known: a foreign answer becomes a failure."""
    if probe.own is False:
        holder = probe.holder or "another process"
        detail = f"the port is answered by {holder}, not by the sidecar"
        return replace(model, port_holder=holder, identified_at=now), replace(probe, ok=False, detail=detail)
    return replace(model, port_holder=None, identified_at=now), probe


def holder_note(error: Optional[str], holder: Optional[str]) -> Optional[str]:
    """Return ``error`` naming the foreign holder of the port, once."""
    if not holder or (error and holder in error):
        return error
    return (error or "crashed") + f"; the port is held by {holder}, not by the sidecar"
