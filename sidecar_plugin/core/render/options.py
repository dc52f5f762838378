"""What one render is asked for, what it produces, and how it refuses: the types every render piece shares.

Kept apart from the writers (``core.render.sections`` writes supervisord's sections,
``core.render.files`` the plan's files) so both can name the options and the error
without importing each other; ``core.render.files`` still offers every name here,
since the shells import them from there.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Optional, Tuple

from sidecar_plugin.core.options.declared import PLAN, default, fields_of
from sidecar_plugin.errors import SidecarError
from sidecar_plugin.names import (
    DEFAULT_PORT, DEFAULT_PROGRAM, LAUNCH_NAME, LITELLM_YAML, OWNER_SUPERVISORD, RUN_DIR, TRAFFIC_METRICS_DIR,
    process_name,
)

PROGRAM_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")


class RenderError(SidecarError, ValueError):
    """Bad options or environment; ``str()`` is the one line for the operator."""


@fields_of(PLAN)
@dataclass(frozen=True)
class RenderOptions:
    """Everything render needs besides the profile and the secrets.

    Paths are absolute: supervisord runs with another working directory and
    another PATH than the operator's shell.
    """

    out_dir: str
    binary: str
    listener_command: Tuple[str, ...]
    port: int = DEFAULT_PORT
    program: str = DEFAULT_PROGRAM
    state_file: str = ""
    log_file: str = ""
    listener_log_file: str = ""
    autostart: bool = True
    metrics_file: str = ""
    group: str = ""
    # The interpreter of the --binary install and the launcher it runs (``shell.litellm_launch``),
    # when --binary is LiteLLM's own entry point; empty: the binary itself serves the socket.
    launcher: Tuple[str, ...] = ()
    # The interpreter supervisord's command names to start the launcher (this package's): the launcher then
    # runs as ``launch.json`` says, so the command stays the same when the workers or the binary change.
    bootstrap: str = ""
    port_owner: str = OWNER_SUPERVISORD
    # Why the port cannot be held for this render (the binary binds it itself; the supervisord that reads the
    # include cannot load the plugin), with the one thing that would have it held; empty: nothing against it.
    port_note: str = ""
    # The include loads the ``sidecar`` rpcinterface: the supervisord that reads it can import the plugin.
    plugin: bool = False
    # every option render is given for the files (core.options.declared)
    host: str = default("--host")
    workers: int = default("--workers")
    health_timeout: float = default("--health-timeout")
    stop_timeout: int = default("--stop-timeout")
    retry_delay: float = default("--retry-delay")
    retry_max_delay: float = default("--retry-max-delay")
    retry_reset_after: float = default("--retry-reset-after")
    hang_window: float = default("--hang-window")
    memory_budget: Optional[int] = default("--memory-budget")
    memory_every: float = default("--memory-every")
    max_requests: Optional[int] = default("--max-requests")
    max_requests_jitter: Optional[int] = default("--max-requests-jitter")
    user: str = default("--user")
    no_traffic_metrics: bool = default("--no-traffic-metrics")

    @property
    def config_path(self) -> str:
        return os.path.join(self.out_dir, LITELLM_YAML)

    @property
    def launch_path(self) -> str:
        """The launcher's ``launch.json``; empty when supervisord runs the command itself (no launcher)."""
        return os.path.join(self.out_dir, LAUNCH_NAME) if self.bootstrap and self.launcher \
            and self.supervisord_socket else ""

    @property
    def traffic_metrics(self) -> bool:
        """Whether LiteLLM serves its Prometheus metrics (``--no-traffic-metrics``, or an install without
        prometheus_client: not)."""
        return not self.no_traffic_metrics

    @property
    def traffic_metrics_dir(self) -> str:
        """prometheus_client's multiprocess folder of this sidecar: every worker's samples, summed by /metrics."""
        return os.path.join(self.out_dir, RUN_DIR, TRAFFIC_METRICS_DIR)

    @property
    def supervisord_socket(self) -> bool:
        """Whether supervisord owns the listening socket (``[fcgi-program]``).

        Not in a fleet (supervisord's ``[group:]`` runs its members as plain
        programs) nor on an IPv6 address (its ``tcp://`` sockets are IPv4).
        """
        return self.port_owner == OWNER_SUPERVISORD and not self.group and ":" not in self.host \
            and not self.port_note

    @property
    def not_held(self) -> str:
        """Why supervisord does not hold this sidecar's port, in one line; empty when it does."""
        if self.supervisord_socket:
            return ""
        if self.group:
            return "supervisord runs a fleet's members ([group:]) as plain programs: LiteLLM binds each port"
        if ":" in self.host:
            return (f"supervisord's tcp:// sockets are IPv4 and --host is {self.host}: LiteLLM binds the port "
                    "(--host 127.0.0.1 has it held)")
        return self.port_note or "LiteLLM binds the port itself (--port-owner sidecar)"

    @property
    def group_name(self) -> str:
        """The supervisord group: the fleet's, else the program's own."""
        return self.group or self.program

    @property
    def process_name(self) -> str:
        """The name supervisord's XML-RPC knows the program by."""
        return process_name(self.program, self.group)


@dataclass(frozen=True)
class RenderedFile:
    path: str
    data: bytes
    mode: int
