"""The listener's line to supervisord (XML-RPC): every failure becomes "no answer", said once in the log.

The listener must never die of supervisord's moods: a fault (the program is
not running), a socket it may not use (``--user`` without the socket's group),
supervisord restarting. Each is logged and answered with ``None``; the
connection is made again on the next call.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, Optional, Tuple
from xmlrpc.client import Fault

from supervisor.xmlrpc import Faults

NO_PLUGIN = ("supervisord has not loaded the sidecar plugin ([rpcinterface:sidecar], which the include carries "
             "where supervisord can import it): it loads at supervisord's next start or `supervisorctl reload`")


class SupervisorLink:
    """Calls on ``rpc_factory()``'s ``supervisor`` namespace, made again after a failure."""

    def __init__(self, rpc_factory: Callable[[], Any], rpc_name: str, log: "logging.LoggerAdapter[Any]") -> None:
        self.rpc_factory = rpc_factory
        self.rpc_name = rpc_name
        self.log = log
        self._rpc: Any = None
        self.denied = False

    def call(self, method: str, *args: Any) -> Any:
        """Return supervisord's answer, or None when there is none to be had."""
        try:
            if self._rpc is None:
                self._rpc = self.rpc_factory()
            return getattr(self._rpc.supervisor, method)(*args)
        except Fault as exc:
            self.log.info("supervisor.%s: %s", method, exc.faultString)
        except PermissionError:
            if not self.denied:  # said once: it will not mend itself
                self.log.error("permission denied on supervisord's socket: the listener (uid %d) cannot ask or "
                               "tell supervisord anything; give its group the socket ([unix_http_server] "
                               "chown=root:GROUP, chmod=0770)", os.geteuid())
            self.denied = True
            self._rpc = None
        except Exception as exc:  # supervisord gone, busy or restarting
            self.log.warning("supervisor.%s failed: %s", method, exc)
            self._rpc = None
        return None

    def port_hold(self, program: str) -> Optional[Tuple[bool, str]]:
        """Return whether the ``sidecar`` plugin inside supervisord holds ``program``'s listening socket, and
        why not; None when supervisord does not answer."""
        try:
            if self._rpc is None:
                self._rpc = self.rpc_factory()
            answer = self._rpc.sidecar.getPortHold(program)
        except Fault as exc:
            if exc.faultCode == Faults.UNKNOWN_METHOD:
                return False, NO_PLUGIN
            self.log.info("sidecar.getPortHold: %s", exc.faultString)
            return None
        except Exception:  # said by call() where it matters; the next start asks again
            self._rpc = None
            return None
        if not isinstance(answer, dict):
            return None
        return bool(answer.get("port_held")), str(answer.get("port_note") or "")

    def process_info(self, attempts: int = 1) -> Optional[dict]:
        """Return the program's ``getProcessInfo``, trying ``attempts`` times 0.25 s apart (a starting supervisord)."""
        for i in range(attempts):
            info = self.call("getProcessInfo", self.rpc_name)
            if isinstance(info, dict):
                return info
            if i + 1 < attempts:
                time.sleep(0.25)
        return None
