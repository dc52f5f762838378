"""The helper module: one truthful answer to "is it up?", and blocking Start/Stop.

It mirrors AgentRoute's Go ``sidecar.Supervisor`` (Start/Stop/State/LogPath),
the supervisord way: supervisord owns the process, the listener publishes its
state, and this module reads that state and asks supervisord to act.
``read_state`` is cheap enough to call per request.
"""

from __future__ import annotations

import time
import xmlrpc.client
from typing import Any, Dict, Optional

from supervisor.xmlrpc import Faults

from sidecar_plugin.core.state.discovery import commands_from_config_info, sidecars
from sidecar_plugin.core.state.endpoint import base_url, with_base_url
from sidecar_plugin.core.state.schema import SidecarState, StateUnavailable
from sidecar_plugin.errors import BinaryNotFoundError, SidecarError, SidecarStartError
from sidecar_plugin.names import DEFAULT_PROGRAM, OWNER_SUPERVISORD, STALE_AFTER, State, process_name
from sidecar_plugin.shell.supervisord import control
from sidecar_plugin.shell.processes.procs import alive, port_is_free, processes
from sidecar_plugin.shell.files.statefile import effective_state, read_state, state_dict
from sidecar_plugin.shell.supervisord.supervisor import (
    MISSING_BINARY, default_server_url, fault_words, public_url, rpc_proxy, stop_window, tell_stop, tolerate,
    unreachable,
)

__all__ = [
    "State", "SidecarState", "Sidecar", "read_state",
    "SidecarError", "StateUnavailable", "SidecarStartError", "BinaryNotFoundError",
    "effective_state", "state_dict", "configured_sidecars", "with_base_url",
]


def configured_sidecars(server_url: Optional[str] = None) -> Dict[str, Dict[str, str]]:
    """Map program -> its listener's options (``state-file``, ``group``...) as supervisord has them.

    Raises StateUnavailable when supervisord cannot be asked.
    """
    url = server_url or default_server_url()
    try:
        infos = rpc_proxy(url).supervisor.getAllConfigInfo()
    except (OSError, xmlrpc.client.Error) as exc:
        why = unreachable(url, exc, "to find which sidecars it runs and where their state files are")
        raise StateUnavailable(f"{why}, or pass the state file") from None
    return sidecars(commands_from_config_info(infos))


class Sidecar:
    """Query and control one supervised sidecar."""

    def __init__(self, state_file: Optional[str] = None, program: str = DEFAULT_PROGRAM,
                 server_url: Optional[str] = None, group: Optional[str] = None,
                 stale_after: float = STALE_AFTER) -> None:
        self.program = program
        self.server_url = server_url or default_server_url()
        self.stale_after = control.check_timeout(stale_after)  # seconds without a heartbeat: stale
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
                raise StateUnavailable(
                    f"supervisord at {public_url(self.server_url)} has no listener for {self.program}")
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

    def _doc(self) -> Dict[str, Any]:
        return state_dict(self.state_file, self.stale_after)

    # -- the Go Supervisor's surface --
    def state(self) -> State:
        """Return the state; never RUNNING from a stale file."""
        return effective_state(self.state_file, self.stale_after)

    def read(self) -> SidecarState:
        """Return the full state record (raises StateUnavailable)."""
        return read_state(self.state_file, self.stale_after)

    @property
    def base_url(self) -> str:
        """``http://<host>:<port>``: where to send ``/v1/messages`` (raises StateUnavailable when unknown).

        From the state file (a gateway needs no supervisord access for it),
        else from the listener's configuration in supervisord.
        """
        try:
            doc = with_base_url(dict(read_state(self.state_file, max_age=float("inf")).raw))
            if doc.get("base_url"):
                return str(doc["base_url"])
        except StateUnavailable:
            pass
        entry = self._discover()
        return base_url(entry.get("host") or "127.0.0.1", int(entry["port"]))

    def key_file(self) -> Optional[str]:
        """Return the file holding the master key to send as ``Authorization: Bearer`` (never the key).

        ``master.key`` when render generated the key, else the sidecar's
        ``litellm.yaml`` (``general_settings.master_key``; the key was given
        in the environment). None when unknown. Either file is 0600: only
        a client running as its owner may read it.
        """
        try:
            found = read_state(self.state_file, max_age=float("inf")).raw.get("key_file")
            if found:
                return str(found)
        except StateUnavailable:
            pass
        try:
            config = self._discover().get("config") or ""
        except StateUnavailable:
            return None
        from sidecar_plugin.shell.files.keyfile import find_key_file  # reads YAML: only when the state file cannot say

        return find_key_file(config)

    def log_path(self) -> str:
        """Return the sidecar's log file (from the state file, else from supervisord)."""
        try:
            path = read_state(self.state_file, self.stale_after).raw.get("log_file")
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
        if self.state() is State.RUNNING:
            return
        requested = time.time()
        try:
            tolerate(lambda: self.rpc.supervisor.startProcess(self.name, False),
                     (Faults.ALREADY_STARTED, Faults.SPAWN_ERROR))  # a spawn error: the listener says why
        except xmlrpc.client.Fault as exc:
            if exc.faultCode in MISSING_BINARY:
                raise BinaryNotFoundError() from None
            raise SidecarError(f"supervisord refused to start {fault_words(exc, self.name)}") from None
        except OSError as exc:
            raise unreachable(self.server_url, exc, near=self._state_file) from None
        control.wait_started(lambda: self._doc(), requested, timeout, missing_for=self.stale_after,
                             path=self.state_file)

    def stop(self, timeout: Optional[float] = None) -> None:
        """Stop the sidecar; return only when its whole tree is gone and the port is free.

        The default waits out the drain window supervisord gives it (its
        ``stopwaitsecs``) plus the time to reap what is left.
        """
        before = self._doc()
        tree = processes(before.get("tree") or [])
        port = before.get("port")
        try:
            tell_stop(self.rpc, self.program)  # the listener must not start it again (a retry)
            tolerate(lambda: self.rpc.supervisor.stopProcess(self.name, False), (Faults.NOT_RUNNING,))
            if timeout is None:
                timeout = stop_window(self.rpc, self.name)
        except xmlrpc.client.Fault as exc:
            raise SidecarError(f"supervisord refused to stop {fault_words(exc, self.name)}") from None
        except OSError as exc:
            raise unreachable(self.server_url, exc, near=self._state_file) from None

        def gone() -> bool:
            if any(alive(p) for p in tree):
                return False
            if port is None or before.get("port_owner") == OWNER_SUPERVISORD:  # supervisord keeps it open
                return True
            return port_is_free(str(before.get("host") or "127.0.0.1"), int(port))

        control.wait_stopped(lambda: self._doc(), timeout, gone)

    def restart(self, timeout: Optional[float] = None) -> bool:
        """Replace the sidecar's tree and block until the new one runs; return whether it was replaced in place.

        In place (``shell.processes.inplace``): the launcher re-executes
        itself, its old workers serve until every new one does, then drain;
        no request waits. Otherwise (not running, or a launcher that does not
        supervise its workers) it is supervisord's stop then start.
        """
        from sidecar_plugin.shell.processes import inplace

        before = self._doc()
        pid = before.get("pid")
        if self.state() is not State.RUNNING or not pid or not inplace.replaceable(int(pid)):
            self.stop(timeout)
            self.start(timeout)
            return False
        old = inplace.workers(int(pid))
        try:
            window = timeout if timeout is not None else control.DEFAULT_WAIT + stop_window(self.rpc, self.name)
            self.rpc.supervisor.signalProcess(self.name, "USR2")
        except xmlrpc.client.Fault as exc:
            raise SidecarError(f"supervisord refused to signal {fault_words(exc, self.name)}") from None
        except OSError as exc:
            raise unreachable(self.server_url, exc, near=self._state_file) from None
        inplace.wait_replaced(int(pid), old, lambda: self.state() is State.RUNNING, window)
        return True
