"""supervisord's XML-RPC namespace ``sidecar``: the sidecar's state for remote clients.

Configured with::

    [rpcinterface:sidecar]
    supervisor.rpcinterface_factory = sidecar_plugin.rpc:make_rpcinterface

It needs no parameter: each program's state file is read from that program's
listener command in supervisord's own configuration. It runs inside
supervisord's single-threaded loop, so every method only reads a small file.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List

from supervisor.xmlrpc import Faults, RPCError

from sidecar_plugin.core.state.discovery import sidecars
from sidecar_plugin.core.state.endpoint import base_url
from sidecar_plugin.core.state.text import printable
from sidecar_plugin.names import DEFAULT_PROGRAM
from sidecar_plugin.shell.supervisord import socket_holder
from sidecar_plugin.shell.files.statefile import state_dict

API_VERSION = "1.0"


def xmlrpc_safe(value: Any) -> Any:
    """Return what XML-RPC can carry: no None (no nil without an extension), string keys,
    no control characters (XML has none), integers beyond 32 bits as floats."""
    if isinstance(value, dict):
        return {printable(str(k)): xmlrpc_safe(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [xmlrpc_safe(v) for v in value if v is not None]
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, int) and not isinstance(value, bool) and not -2**31 <= value < 2**31:
        return float(value)
    return value


class SidecarNamespaceRPCInterface:
    """The ``sidecar.*`` methods."""

    def __init__(self, supervisord: Any) -> None:
        self.supervisord = supervisord

    def _listeners(self) -> Dict[str, Dict[str, str]]:
        commands = [p.command for g in self.supervisord.options.process_group_configs for p in g.process_configs]
        return sidecars(commands)

    def getAPIVersion(self) -> str:
        """Return the version of the sidecar namespace API.

        @return string version
        """
        return API_VERSION

    def listPrograms(self) -> List[str]:
        """Return the names of the programs that have a sidecar health listener.

        @return array names
        """
        return sorted(self._listeners())

    def getState(self, program: str = DEFAULT_PROGRAM) -> Dict[str, Any]:
        """Return the sidecar state of ``program`` (the state file, no secrets).

        ``state`` is never ``running`` from a stale file: a listener silent for
        15 s reads as ``crashed`` (``recorded_state`` keeps what it last wrote).

        @param string program  the sidecar's program name
        @return struct state
        """
        args = self._listeners().get(program)
        if args is None:
            raise RPCError(Faults.BAD_NAME, f"no sidecar listener configured for {program}")
        doc = state_dict(args["state-file"])
        doc["program"] = program
        doc["group"] = args.get("group") or program
        doc["state_file"] = args["state-file"]
        doc["server_time"] = time.time()
        port = doc.get("port") or _int(args.get("port"))
        doc.setdefault("port", port)
        if port and not doc.get("base_url"):  # no state file yet: the URL is configuration all the same
            doc["base_url"] = base_url(str(doc.get("host") or args.get("host") or "127.0.0.1"), int(port))
        return xmlrpc_safe(doc)

    def getPortHold(self, program: str = DEFAULT_PROGRAM) -> Dict[str, Any]:
        """Return whether supervisord holds the listening socket of ``program`` now (no LiteLLM
        exit closes the port), and if not, why and what to do (empty when held).

        @param string program  the sidecar's program name
        @return struct {"port_held": bool, "port_note": string}
        """
        args = self._listeners().get(program)
        if args is None:
            raise RPCError(Faults.BAD_NAME, f"no sidecar listener configured for {program}")
        ok, note = socket_holder.port_state(self.supervisord, args.get("group") or program)
        return {"port_held": ok, "port_note": printable(note or "")}

    def getAllStates(self) -> List[Dict[str, Any]]:
        """Return getState of every sidecar program.

        @return array states
        """
        return [self.getState(name) for name in self.listPrograms()]


def _int(text: Any) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        return 0


def make_rpcinterface(supervisord: Any, **config: Any) -> SidecarNamespaceRPCInterface:
    """supervisord's rpcinterface factory; takes no options of its own.

    It also holds each sidecar's listening socket (``shell.supervisord.socket_holder``) when
    supervisord owns it (``[fcgi-program]``): no exit of LiteLLM closes the port.
    """
    interface = SidecarNamespaceRPCInterface(supervisord)
    if getattr(supervisord, "sidecar_holds", False):  # a second section naming this factory: once is enough
        return interface
    supervisord.sidecar_holds = True
    try:
        socket_holder.install(supervisord, lambda: interface.listPrograms())
    except Exception as exc:  # the include carries this factory: nothing in it may keep supervisord from starting
        supervisord.options.logger.warn(f"sidecar: cannot hold the sidecars' listening sockets ({exc!r}); "
                                        "their ports close while LiteLLM restarts")
    return interface
