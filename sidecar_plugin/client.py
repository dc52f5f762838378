"""The helper module: one truthful answer to "is it up?", and blocking Start/Stop.

It mirrors AgentRoute's Go ``sidecar.Supervisor`` (Start/Stop/State/LogPath),
the supervisord way: supervisord owns the process, the listener publishes its
state, and this module reads that state and asks supervisord to act.
``read_state`` is cheap enough to call per request.
"""

from __future__ import annotations

import os
import time
import xmlrpc.client
from typing import Any, Dict, List, Optional

from sidecar_plugin import control
from sidecar_plugin.discovery import DEFAULT_PROGRAM, commands_from_config_info, process_name, sidecars
from sidecar_plugin.errors import BinaryNotFoundError, SidecarError, SidecarStartError
from sidecar_plugin.reaper import alive, port_is_free, processes
from sidecar_plugin.statefile import (
    STALE_AFTER, SidecarState, State, StateMissing, StateUnavailable, read_state,
)
from sidecar_plugin.supervisor_rpc import default_server_url, display_url, rpc_proxy

__all__ = [
    "State", "SidecarState", "Sidecar", "read_state",
    "SidecarError", "StateUnavailable", "SidecarStartError", "BinaryNotFoundError",
    "effective_state", "state_dict", "configured_sidecars",
]


def effective_state(path: str, max_age: float = STALE_AFTER) -> State:
    """Return the state to act on: STOPPED with no file yet, CRASHED if stale or corrupt."""
    try:
        st = read_state(path, max_age=max_age)
    except StateMissing:
        return State.STOPPED
    except StateUnavailable:
        return State.CRASHED
    return State.CRASHED if st.is_stale else st.state


def state_dict(path: str, max_age: float = STALE_AFTER) -> Dict[str, Any]:
    """Return the state file as a dict with ``is_stale``; a placeholder when unavailable."""
    try:
        st = read_state(path, max_age=max_age)
    except StateMissing:
        return {"state": "stopped", "available": False, "is_stale": False, "error": None, "tree": []}
    except StateUnavailable as exc:
        return {"state": "crashed", "available": False, "is_stale": True, "error": str(exc), "tree": []}
    doc = dict(st.raw)
    doc["is_stale"] = st.is_stale
    doc["available"] = True
    return doc


def configured_sidecars(server_url: Optional[str] = None) -> Dict[str, Dict[str, str]]:
    """Map program -> its listener's options (``state-file``, ``group``...) as supervisord has them.

    Raises StateUnavailable when supervisord cannot be asked.
    """
    url = server_url or default_server_url()
    try:
        infos = rpc_proxy(url).supervisor.getAllConfigInfo()
    except (OSError, xmlrpc.client.Error) as exc:
        raise StateUnavailable(f"cannot ask supervisord at {display_url(url)} which sidecars it runs and where their "
                               f"state files are ({exc}); pass the state file") from None
    return sidecars(commands_from_config_info(infos))


class Sidecar:
    """Query and control one supervised sidecar."""

    def __init__(self, state_file: Optional[str] = None, program: str = DEFAULT_PROGRAM,
                 server_url: Optional[str] = None, group: Optional[str] = None) -> None:
        self.program = program
        self.server_url = server_url or default_server_url()
        self._rpc: Any = None
        self._state_file = state_file
        self._group = group
        self._entry: Optional[Dict[str, str]] = None

    # -- plumbing --
    @property
    def rpc(self) -> Any:
        if self._rpc is None:
            self._rpc = rpc_proxy(self.server_url)
        return self._rpc

    def _discover(self) -> Dict[str, str]:
        """This program's listener options, from supervisord's configuration (asked once)."""
        if self._entry is None:
            entry = configured_sidecars(self.server_url).get(self.program)
            if entry is None:
                raise StateUnavailable(f"supervisord at {display_url(self.server_url)} has no listener for {self.program}")
            self._entry = entry
        return self._entry

    @property
    def state_file(self) -> str:
        """The state file: as given, else found from the listener's config in supervisord."""
        if self._state_file is None:
            self._state_file = self._discover()["state-file"]
        return self._state_file

    @property
    def group(self) -> str:
        """The supervisord group: as given, else from supervisord, else the state file, else the program."""
        if self._group is None:
            try:
                self._group = self._discover().get("group") or self.program
            except StateUnavailable:
                try:
                    self._group = str(read_state(self.state_file, max_age=float("inf")).raw.get("group")
                                      or self.program)
                except StateUnavailable:
                    self._group = self.program
        return self._group

    @property
    def name(self) -> str:
        """The name supervisord's XML-RPC knows the program by (``group:program``)."""
        return process_name(self.program, self.group)

    # -- the Go Supervisor's surface --
    def state(self) -> State:
        """Return the state; never RUNNING from a stale file."""
        return effective_state(self.state_file)

    def read(self) -> SidecarState:
        """Return the full state record (raises StateUnavailable)."""
        return read_state(self.state_file)

    def log_path(self) -> str:
        """Return the sidecar's log file (from the state file, else from supervisord)."""
        try:
            path = read_state(self.state_file).raw.get("log_file")
            if path:
                return str(path)
        except StateUnavailable:
            pass
        info = self.rpc.supervisor.getProcessInfo(self.name)
        return str(info.get("stdout_logfile", ""))

    def start(self, timeout: Optional[float] = None) -> None:
        """Start the sidecar and block until it is running.

        Raises SidecarStartError (with the log tail) when it crashes or does not
        become healthy; BinaryNotFoundError when LiteLLM is missing.
        """
        if effective_state(self.state_file) is State.RUNNING:
            return
        requested = time.time()
        try:
            self.rpc.supervisor.startProcess(self.name, False)
        except xmlrpc.client.Fault as exc:
            if "ALREADY_STARTED" not in exc.faultString:
                if control.is_spawn_error_missing_binary(exc.faultString):
                    raise BinaryNotFoundError() from None
                if "SPAWN_ERROR" not in exc.faultString:
                    raise SidecarError(f"supervisord refused to start {self.name}: {exc.faultString}") from None
        except OSError as exc:
            raise SidecarError(f"cannot reach supervisord at {display_url(self.server_url)}: {exc}") from None
        control.wait_started(lambda: state_dict(self.state_file), requested, timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the sidecar; return only when its whole tree is gone and the port is free."""
        before = state_dict(self.state_file)
        tree = processes(before.get("tree") or [])
        port = before.get("port")
        try:
            self.rpc.supervisor.stopProcess(self.name, False)
        except xmlrpc.client.Fault as exc:
            if "NOT_RUNNING" not in exc.faultString:
                raise SidecarError(f"supervisord refused to stop {self.name}: {exc.faultString}") from None
        except OSError as exc:
            raise SidecarError(f"cannot reach supervisord at {display_url(self.server_url)}: {exc}") from None

        def gone() -> bool:
            if any(alive(p) for p in tree):
                return False
            return port is None or port_is_free(str(before.get("host") or "127.0.0.1"), int(port))

        control.wait_stopped(lambda: state_dict(self.state_file), timeout, gone)
