"""Whether supervisor's private code still has the shape that ``socket_holder`` replaces.

``socket_holder`` keeps the sidecars' listening sockets open by replacing private code
of supervisor, known as it is in 4.2.5 and 4.3.0. A supervisor where any of it
differs would otherwise fail inside supervisord (an attribute gone, a method
called with other arguments), so the difference is found before anything is
replaced, and named in one line.

Pure: it only reads the loaded supervisor modules, so any interpreter
(supervisord's own, or render asking whether the port can be held there) gets
the same answer.
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, Optional, Tuple

from supervisor import datatypes, events, options, process, socket_manager

# What each replaced or called method must accept, and the names its code must use: the
# attributes ``HeldSocketManager`` reads and sets, what the replaced ``cleanup_fds`` reads.
METHODS: Tuple[Tuple[str, str, Tuple[Any, ...], Tuple[str, ...]], ...] = (
    ("SocketManager", "__init__", (None, None), ("logger", "socket", "prepared", "socket_config")),
    ("SocketManager", "_prepare_socket", (None,), ("prepared", "socket", "socket_config")),
    ("SocketManager", "get_socket", (None,), ()),
    ("SocketManager", "_close", (None,), ("socket", "prepared")),
    ("ServerOptions", "cleanup_fds", (None,), ("minfds",)),
)
EVENTS = ("subscribe", "ProcessGroupAddedEvent", "ProcessGroupRemovedEvent", "Tick5Event")


def problem() -> Optional[str]:
    """Return what differs from the shape ``socket_holder`` expects (one line), or None.

    What ``socket_holder`` replaced itself (its code says ``keeps_held``) counts as
    supervisor's: the answer is the same before and after ``socket_holder`` loads.
    """
    version = getattr(options, "VERSION", "?")
    classes = {"SocketManager": getattr(socket_manager, "SocketManager", None),
               "ServerOptions": getattr(options, "ServerOptions", None)}
    for name, cls in classes.items():
        if not isinstance(cls, type):
            return f"supervisor {version} has no class {name}"
    found = _methods(classes) or _wiring(classes["SocketManager"])  # type: ignore[arg-type]  # a type: checked above
    return f"supervisor {version}{found}" if found else None


def _methods(classes: Dict[str, Any]) -> Optional[str]:
    for owner, name, args, names in METHODS:
        method = getattr(classes[owner], name, None)
        if getattr(method, "keeps_held", False):  # held's own, from a load before (a reload)
            continue
        code = getattr(method, "__code__", None)
        if code is None:
            return f"'s {owner} has no method {name}"
        try:
            inspect.signature(method).bind(  # type: ignore[arg-type]  # a method: found above
                *args, **({"logger": None} if name == "__init__" else {}))
        except (TypeError, ValueError):
            return f"'s {owner}.{name} takes other arguments"
        missing = [n for n in names if n not in code.co_names]
        if missing:
            return f"'s {owner}.{name} no longer uses {', '.join(missing)}"
    return None


def _wiring(manager: type) -> Optional[str]:
    if process.SocketManager is not manager and not getattr(process.SocketManager, "keeps_held", False):
        return "'s process.SocketManager is not its SocketManager (replaced by another plugin?)"
    made = getattr(getattr(getattr(process, "FastCGIProcessGroup", None), "__init__", None), "__code__", None)
    if made is None or not {"SocketManager", "socket_manager"} <= set(made.co_names):
        return "'s FastCGIProcessGroup no longer makes its socket_manager from process.SocketManager"
    config = getattr(getattr(datatypes, "InetStreamSocketConfig", None), "__init__", None)
    if not hasattr(getattr(datatypes, "SocketConfig", None), "get_backlog") or \
            "url" not in getattr(getattr(config, "__code__", None), "co_names", ()):
        return "'s socket configurations have no url or get_backlog"
    gone = [e for e in EVENTS if not hasattr(events, e)]
    return f"'s events have no {', '.join(gone)}" if gone else None
