"""Keep each sidecar's listening socket open while supervisord runs: no LiteLLM exit closes the port.

supervisord's ``[fcgi-program]`` creates the listening socket and hands it to
its process as fd 0, but counts the socket's references by *live process*:
when the process exits (a crash, a restart, a stop) it closes the socket,
which resets every connection waiting in its queue and refuses every new one
until the respawn binds again. Loaded inside supervisord by the ``sidecar``
rpcinterface, this module keeps one more descriptor of each sidecar's socket,
so the kernel keeps it listening and connections wait in its queue instead.

Re-creating the group (``supervisorctl update``, ``apply``, ``reload``) would
bind the address again and fail with "Address already in use" while the held
socket listens: groups made from then on get a socket manager that adopts the
held socket of their address. A held socket whose sidecar went away (removed,
or moved to another port) is closed after a short grace, so nothing is left
listening for nobody; within the grace the group re-created at the same
address (remove then add) adopts it.

All of this replaces private code of supervisor (``SocketManager._prepare_socket``,
``process.SocketManager``, ``ServerOptions.cleanup_fds``), known as it is in
4.2.5 and 4.3.0: ``shape_problem`` (``shape``) checks at load that it still has that shape,
and a supervisor where it differs gets supervisor's plain behaviour (nothing
replaced, the port closes while LiteLLM restarts), said in one line of
supervisord's log and in ``port_state``, never a broken supervisord.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any, Callable, Dict, Iterable, Optional, Set, Tuple

from supervisor import events, process, socket_manager

from sidecar_plugin.shell.supervisord import shape

# supervisor's own socket manager, or a stand-in where it has none (then nothing is replaced)
SocketManager: Any = getattr(socket_manager, "SocketManager", None)
if not isinstance(SocketManager, type):
    SocketManager = object

# Seconds a held socket outlives its group before it is closed: ``update`` and
# ``apply`` remove a group and add it again within milliseconds.
GRACE = 10.0

# socket url -> our own descriptor of it. Module-wide on purpose: ``supervisorctl
# reload`` re-creates every group (and this plugin) in the same process, and the
# socket must outlive that too.
_held: Dict[str, socket.socket] = {}
_parked: Dict[str, float] = {}
_wanted: Set[str] = set()  # the urls of the sidecars' groups, as last seen
_inodes: Dict[str, int] = {}  # url -> the inode of the held socket (to know the descriptor is still it)


class HeldSocketManager(SocketManager):
    """supervisord's socket manager, except that it serves a held socket rather than binding again.

    Each preparation takes a descriptor of its own (``dup``): supervisord's
    reference counting closes that one, never the held socket.
    """

    keeps_held = True  # this module's, not supervisor's (``shape``)
    prepared: bool  # SocketManager's (supervisor has no types)

    def _prepare_socket(self) -> None:
        if self.prepared:
            return
        url = self.socket_config.url
        held = _usable(url)
        if held is not None:
            self.socket = held.dup()
            self.socket.listen(self.socket_config.get_backlog() or socket.SOMAXCONN)
            self.prepared = True
            return
        try:
            super()._prepare_socket()
        except OSError as exc:
            # Another process holds the address. Raising here would end supervisord itself (at
            # its start, or at a spawn): the program gets a socket that does not listen instead,
            # LiteLLM's launcher exits saying so, and each retry binds again.
            if self.logger:
                self.logger.warn(f"sidecar: cannot listen on {url} ({exc.strerror}): the program cannot start "
                                 "until the address is free")
            self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.prepared = True
            return
        if url in _wanted:  # a sidecar's socket bound anew (its address was busy before): hold it
            _keep(url, self.socket)


# What of supervisor's private code this module replaces differs from the shape it expects (one line),
# or None: render asks it in supervisord's interpreter too, to know whether the port can be held there.
shape_problem = shape.problem

# supervisord imports the rpcinterface factories (hence this module) while it reads its
# configuration, before it makes the groups: from then on every [fcgi-program] group is
# made with this manager, so a socket held from before (a reload) is adopted and a busy
# address never ends supervisord. Checked once, when loaded: what was replaced stays so.
PROBLEM = shape_problem()
if PROBLEM is None:
    process.SocketManager = HeldSocketManager


def _keep(url: str, sock: Any) -> None:
    """Hold a descriptor of ``sock`` (a listening socket, or supervisord's proxy of one) for ``url``."""
    _held[url] = sock.dup()
    _inodes[url] = os.fstat(_held[url].fileno()).st_ino


def _usable(url: str) -> Optional[socket.socket]:
    """The held socket of ``url`` if it is still ours and listening; else forget it (never close a
    descriptor that may have become someone else's)."""
    held = _held.get(url)
    if held is None:
        return None
    try:
        same = os.fstat(held.fileno()).st_ino == _inodes.get(url) and \
            held.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
    except OSError:
        same = False
    if not same:
        _held.pop(url, None)
        _parked.pop(url, None)
        held.detach()
    return held if same else None


def _sidecar_groups(supervisord: Any, programs: Set[str]) -> Dict[str, Any]:
    """Return url -> group of every ``[fcgi-program]`` group that runs a sidecar."""
    found = {}
    for name, group in list(supervisord.process_groups.items()):
        if name in programs and hasattr(group, "socket_manager"):
            found[group.config.socket_config.url] = group
    return found


def hold(supervisord: Any, programs: Iterable[str]) -> Dict[str, str]:
    """Hold the socket of every sidecar group now; park what no group uses any more. Return url -> group."""
    groups = _sidecar_groups(supervisord, set(programs))
    _wanted.clear()
    _wanted.update(groups)
    for url, group in groups.items():
        if url not in _held:
            proxy = group.socket_manager.get_socket()  # binds it when no process holds it now
            if proxy.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                _keep(url, proxy)
            del proxy
        _parked.pop(url, None)
        if not isinstance(group.socket_manager, HeldSocketManager):
            # a group made before this plugin loaded (supervisord's first start): from its next
            # spawn on it serves the held socket; its running process keeps the old descriptor
            group.socket_manager = HeldSocketManager(group.config.socket_config,
                                                     logger=supervisord.options.logger)
    now = time.monotonic()
    for url in _held:
        if url not in groups:
            _parked.setdefault(url, now)
    return {url: group.config.name for url, group in groups.items()}


def sweep(now: float, grace: float = GRACE) -> Set[str]:
    """Close the held sockets parked for longer than ``grace``; return their urls."""
    closed = {url for url, since in _parked.items() if now - since >= grace}
    for url in closed:
        _parked.pop(url, None)
        sock = _held.pop(url, None)
        _inodes.pop(url, None)
        if sock is not None:
            sock.close()
    return closed


def _keep_through_reload(options: Any) -> None:
    """Make supervisord's ``reload`` spare the held descriptors.

    A reload closes every descriptor from 5 up (``cleanup_fds``) before it
    re-creates the groups, with a new options object: the class is patched,
    so the held sockets are skipped and the port stays open through it too.
    """
    cls = type(options)
    if getattr(cls.cleanup_fds, "keeps_held", False):
        return

    def cleanup_fds(self: Any) -> None:
        start = 5
        for fd in sorted(s.fileno() for s in _held.values() if s.fileno() >= start) + [self.minfds]:
            os.closerange(start, fd)
            start = fd + 1
    cleanup_fds.keeps_held = True  # type: ignore[attr-defined]
    cls.cleanup_fds = cleanup_fds


def install(supervisord: Any, programs: Callable[[], Iterable[str]]) -> None:
    """Hold the sidecars' sockets now and whenever a group is added; close what is parked too long.

    ``programs`` names the sidecar programs (asked again at every change: an
    ``update`` may add one). On a supervisor whose private code differs
    (``PROBLEM``) it holds nothing and says so once per load.
    """
    logger = supervisord.options.logger
    if PROBLEM is not None:
        logger.warn(f"sidecar: not holding the listening sockets ({PROBLEM}): {NOT_HELD}")
        return
    _keep_through_reload(supervisord.options)

    def refresh(event: Any) -> None:
        try:
            for url, name in hold(supervisord, programs()).items():
                logger.debug(f"sidecar: holding the listening socket {url} of {name}")
        except Exception as exc:  # never break supervisord's loop
            logger.warn(f"sidecar: could not hold a listening socket: {exc}")

    def expire(event: Any) -> None:
        for url in sweep(time.monotonic()):
            logger.info(f"sidecar: closed the listening socket {url} (its sidecar is gone)")

    events.subscribe(events.ProcessGroupAddedEvent, refresh)
    events.subscribe(events.ProcessGroupRemovedEvent, refresh)
    events.subscribe(events.Tick5Event, expire)
    refresh(None)


# What a sidecar loses where its socket is not held, and the one thing that gets it held.
NOT_HELD = "the port closes while LiteLLM restarts (supervisor>=4.2.5,<4.4 keeps it open)"


def port_state(supervisord: Any, group: str) -> Tuple[bool, Optional[str]]:
    """Return (whether the listening socket of ``group`` is held now, why not and what to do)."""
    if PROBLEM is not None:
        return False, f"{PROBLEM}: {NOT_HELD}"
    found = supervisord.process_groups.get(group)
    if found is None:
        return False, f"supervisord has no group {group}: apply the sidecar"
    if not hasattr(found, "socket_manager"):  # an IPv6 host, a wrapper, --port-owner sidecar: by design
        return False, f"{group} is a [program:], not an [fcgi-program]: LiteLLM binds the port itself"
    url = found.config.socket_config.url
    if _usable(url) is None:
        return False, f"{url} is not listening (another process holds the address?): the sidecar starts once it is free"
    return True, None
