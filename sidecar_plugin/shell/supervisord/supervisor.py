"""Reach supervisord's XML-RPC from outside it, and read its faults by number.

``childutils.getRPCInterface`` does this for processes supervisord started
(it reads their environment); clients give a URL instead. Faults are
recognised by supervisor's own codes (``Faults.BAD_NAME``...), never by their
text, and turned into words in one table, as ``supervisorctl`` does.
"""

from __future__ import annotations

import os
import re
import socket
import stat
import xmlrpc.client
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Tuple, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

from supervisor.xmlrpc import Faults, SupervisorTransport, UnixStreamHTTPConnection

from sidecar_plugin.errors import SidecarError
from sidecar_plugin.names import process_name

DEFAULT_SERVER_URL = "unix:///run/supervisor.sock"
RPC_TIMEOUT = 30.0  # seconds one XML-RPC socket operation may take (supervisord answers in milliseconds)
DEFAULT_STOP_WAIT = 300.0  # a program supervisord does not list: wait this long at most
T = TypeVar("T")

# What a person reads for each fault that reaches them (the fault's own text follows).
FAULT_WORDS = {
    Faults.BAD_NAME: "supervisord has no such program",
    Faults.NO_FILE: "the command does not exist",
    Faults.NOT_EXECUTABLE: "the command cannot be executed",
    Faults.SPAWN_ERROR: "supervisord could not spawn it",
    Faults.ABNORMAL_TERMINATION: "it exited while starting",
    Faults.ALREADY_STARTED: "it is already started",
    Faults.NOT_RUNNING: "it is not running",
    Faults.SHUTDOWN_STATE: "supervisord is shutting down",
    Faults.FAILED: "supervisord failed",
    Faults.CANT_REREAD: "supervisord cannot read its configuration",
    Faults.STILL_RUNNING: "it is still running",
    Faults.UNKNOWN_METHOD: "supervisord lacks the sidecar plugin (no [rpcinterface:sidecar])",
}
# A start that fails with these means the LiteLLM binary is missing.
MISSING_BINARY = (Faults.NO_FILE, Faults.NOT_EXECUTABLE)


class BadServerUrl(SidecarError):
    """The supervisord URL given cannot be used; bad input, said in one line."""


def default_server_url(env: Optional[Mapping[str, str]] = None) -> str:
    """Return $SUPERVISOR_SERVER_URL, else the conventional unix socket."""
    env = os.environ if env is None else env
    return env.get("SUPERVISOR_SERVER_URL") or DEFAULT_SERVER_URL


def split_credentials(url: str) -> Tuple[str, str, str]:
    """Return (url without credentials, username, password)."""
    if not url.startswith(("http://", "https://")):
        return url, "", ""
    parts = urlsplit(url)
    user = unquote(parts.username or "")
    password = unquote(parts.password or "")
    host = parts.hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)), user, password


def public_url(url: str) -> str:
    """Return the URL as it may be shown to a person: without its credentials, whatever its scheme."""
    info = _userinfo(url)
    if info:
        url = url.replace(info + "@", "", 1)
    try:
        return split_credentials(url)[0]
    except ValueError:  # a port that is not a number: show only the scheme
        return url.split("://", 1)[0] + "://..." if "://" in url else "..."


def _userinfo(url: str) -> str:
    """Return the ``user:pass`` part of a URL by plain text, even when the URL does not parse.

    A password holding ``/``, ``?`` or ``#`` makes ``urlsplit`` cut it in two
    (and its error then quotes a piece of it), so the part between ``://``
    and the last ``@`` before any later ``://`` is taken as it is.
    """
    if "://" not in url:
        return ""
    rest = url.split("://", 1)[1]
    return rest.rpartition("@")[0] if "@" in rest else ""


def credentials(server_url: Optional[str], env: Optional[Mapping[str, str]] = None) -> Tuple[str, ...]:
    """Return the secrets a supervisord URL (or $SUPERVISOR_*) carries, to keep them out of every output.

    The whole ``user:pass``, the password, and each piece of it between
    ``/``, ``?`` and ``#`` (what a parser's error may quote).
    """
    env = os.environ if env is None else env
    found = [env.get("SUPERVISOR_PASSWORD", "")]
    for url in (server_url or "", env.get("SUPERVISOR_SERVER_URL", "")):
        info = _userinfo(url)
        if not info:
            continue
        user, _, password = info.partition(":")
        found += [info, password, unquote(password)]
        found += [piece for piece in re.split(r"[/?#]", password) if len(piece) >= 4]
    return tuple(s for s in found if s)


def rpc_proxy(server_url: str, env: Optional[Mapping[str, str]] = None, timeout: float = RPC_TIMEOUT) -> Any:
    """Return an XML-RPC proxy to supervisord at ``server_url``.

    Credentials come from the URL (``http://user:pass@host:port``), else from
    $SUPERVISOR_USERNAME / $SUPERVISOR_PASSWORD, as supervisorctl takes them.
    Every call has a deadline (``timeout`` seconds per socket operation): a
    wedged supervisord must not hang a client for ever.
    """
    env = os.environ if env is None else env
    try:
        url, user, password = split_credentials(server_url)
    except ValueError:
        raise BadServerUrl(f"supervisord URL {public_url(server_url)}: not a valid URL (unix:///path/to.sock or "
                           "http://user:pass@host:port; a password with / ? # must be percent-encoded)") from None
    user = user or env.get("SUPERVISOR_USERNAME", "")
    password = password or env.get("SUPERVISOR_PASSWORD", "")
    transport = SupervisorTransport(user or None, password or None, url)
    made = transport._get_connection

    def get_connection() -> Any:
        conn = made()
        conn.timeout = timeout
        if isinstance(conn, UnixStreamHTTPConnection):
            def connect(c: Any = conn) -> None:  # supervisor's own connect sets no timeout
                c.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                c.sock.settimeout(timeout)
                c.sock.connect(c.socketfile)
            conn.connect = connect
        return conn

    transport._get_connection = get_connection
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport, allow_none=True)


POINT_AT = "point at it with -s URL or $SUPERVISOR_SERVER_URL"


def unreachable(url: str, exc: BaseException, doing: str = "", near: Optional[str] = None,
                how: str = POINT_AT) -> SidecarError:
    """The one error for "supervisord did not answer": where, why, how to point at it; never its password.

    ``near``: the state file given, if any. A supervisord socket beside it
    (the demo's ``run/supervisor.sock``) is named as the ``-s`` to pass.
    """
    why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
    if isinstance(exc, xmlrpc.client.ProtocolError):
        why = f"HTTP {exc.errcode} {exc.errmsg}"
    what = f" ({doing})" if doing else ""
    beside = os.path.join(os.path.dirname(os.path.abspath(near)), "supervisor.sock") if near else ""
    if beside and "unix://" + beside != url and _is_socket(beside):
        how = f"point at it with -s unix://{beside} (the socket beside the state file) or $SUPERVISOR_SERVER_URL"
    return SidecarError(f"cannot reach supervisord at {public_url(url)}{what}: {why}; {how}")


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def fault_words(fault: xmlrpc.client.Fault, name: str = "") -> str:
    """Return a fault as a person reads it: what it means, then supervisord's own text."""
    words = FAULT_WORDS.get(fault.faultCode, f"fault {fault.faultCode}")
    return f"{name + ': ' if name else ''}{words} ({fault.faultString})"


def tolerate(call: Callable[[], T], codes: Iterable[int]) -> Optional[T]:
    """Run an XML-RPC call; a fault whose code is in ``codes`` means "already so" and gives None.

    ``startProcess`` of a started program and ``stopProcess`` of a stopped one
    are the outcomes the caller wanted.
    """
    try:
        return call()
    except xmlrpc.client.Fault as exc:
        if exc.faultCode in tuple(codes):
            return None
        raise


def tell_stop(rpc: Any, program: str) -> None:
    """Tell ``program``'s listener that an operator stops it on purpose, so it never starts it again.

    A sidecar the listener is retrying is already down (FATAL, STOPPED), so
    ``stopProcess`` changes nothing supervisord would report; the listener
    hears this REMOTE_COMMUNICATION event instead. A listener that does not
    subscribe to it (an older render) simply never sees it.
    """
    from sidecar_plugin.core.listener.events import stop_command

    try:
        rpc.supervisor.sendRemoteCommEvent(stop_command(program), program)
    except xmlrpc.client.Fault:
        pass


def stop_window(rpc: Any, name: str) -> float:
    """Return how long a stop may take: supervisord's drain window (``stopwaitsecs``) plus time to reap."""
    for info in rpc.supervisor.getAllConfigInfo():
        if process_name(str(info.get("name")), str(info.get("group"))) == name:
            return float(info.get("stopwaitsecs") or 0) + 30.0
    return DEFAULT_STOP_WAIT


def live_processes(rpc: Any) -> Dict[str, str]:
    """Map ``group:name`` -> statename of every process supervisord has."""
    return {f"{i['group']}:{i['name']}": i["statename"] for i in rpc.supervisor.getAllProcessInfo()}
