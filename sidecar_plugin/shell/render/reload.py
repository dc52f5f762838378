"""Apply a ``litellm.yaml`` change to a running sidecar without dropping a request: a rolling reload.

A change LiteLLM reads from ``litellm.yaml`` under an unchanged command
(supervisord cannot see inside it) is applied without dropping a request: with
several workers, ``SIGHUP`` makes uvicorn replace them one at a time, each new
worker (which reads the new file) serving before the old one retires and
finishes its requests; apply waits until the listener reports that every worker
runs the new version. One worker has nothing to serve meanwhile: it is restarted.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional, Set

from sidecar_plugin.core.render.terms import RenderOptions
from sidecar_plugin.errors import SidecarError
from sidecar_plugin.names import LITELLM_YAML, STOP_MARGIN
from sidecar_plugin.shell.supervisord import control
from sidecar_plugin.shell.files.outfiles import file_version
from sidecar_plugin.shell.files.statefile import state_dict
from sidecar_plugin.shell.supervisord.supervisor import live_processes


def reloadable(rpc: Any, s: RenderOptions, fresh_groups: Set[str]) -> bool:
    """A config change under the same command, several workers, running now: a rolling reload."""
    if s.group_name in fresh_groups or s.workers < 2:
        return False
    # supervisord may still say STARTING (startsecs) of a sidecar that already answers
    return live_processes(rpc).get(s.process_name) in ("STARTING", "RUNNING") and \
        state_dict(s.state_file).get("state") == "running"


def rolling_reload(rpc: Any, s: RenderOptions, reload_timeout: Optional[float], say: Callable[[str], None]) -> None:
    """Replace the workers one at a time (SIGHUP) and wait until every one runs the file on disk.

    The listener follows the replacement (same main pid, workers born after
    the change) and records the version in the state file: that is the end.
    """
    wanted = file_version(s.config_path)
    requested = time.time()
    say(f"{s.program}: reloading {LITELLM_YAML} without a restart: uvicorn replaces its {s.workers} "
        "workers one at a time (SIGHUP), each new one serving before the old one finishes its requests")
    rpc.supervisor.signalProcess(s.process_name, "HUP")
    # Each old worker may drain its streams for the whole drain window before it retires.
    limit = reload_timeout or s.workers * (s.health_timeout + s.stop_timeout + STOP_MARGIN)

    def step() -> Optional[bool]:
        doc = state_dict(s.state_file)
        if doc.get("state") == "crashed" and float(doc.get("since") or 0) >= requested:
            raise control.start_error(doc)
        if doc.get("state") == "running" and doc.get("config_version") == wanted:
            return True
        return None

    def late() -> Exception:
        return SidecarError(f"{s.program}: its new workers did not all come up within {limit:g} s "
                            "(the old ones keep serving)")

    control.poll(step, limit, late)
