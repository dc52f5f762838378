"""Reach supervisord's XML-RPC from outside it: unix socket or http with credentials.

``childutils.getRPCInterface`` does this for processes supervisord started
(it reads their environment); clients give a URL instead.
"""

from __future__ import annotations

import os
import xmlrpc.client
from typing import Any, Mapping, Optional, Tuple
from urllib.parse import unquote, urlsplit, urlunsplit

from supervisor.xmlrpc import SupervisorTransport

DEFAULT_SERVER_URL = "unix:///run/supervisor.sock"


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


def display_url(url: str) -> str:
    """Return ``url`` fit for a message: without the credentials ``http://user:pass@host`` carries."""
    try:
        return split_credentials(url)[0]
    except ValueError:  # a port that is not a number: show only the scheme
        return url.split("://", 1)[0] + "://..." if "://" in url else "..."


def credentials(server_url: Optional[str], env: Optional[Mapping[str, str]] = None) -> Tuple[str, ...]:
    """Return the secrets a supervisord URL (or $SUPERVISOR_*) carries, to keep them out of every output."""
    env = os.environ if env is None else env
    found = [env.get("SUPERVISOR_PASSWORD", "")]
    for url in (server_url or "", env.get("SUPERVISOR_SERVER_URL", "")):
        try:
            _, user, password = split_credentials(url)
        except ValueError:
            continue
        if password:
            found += [password, f"{user}:{password}"]
        if "@" in url:
            found.append(urlsplit(url).netloc.rpartition("@")[0])
    return tuple(s for s in found if s)


def rpc_proxy(server_url: str, env: Optional[Mapping[str, str]] = None) -> Any:
    """Return an XML-RPC proxy to supervisord at ``server_url``.

    Credentials come from the URL (``http://user:pass@host:port``), else from
    $SUPERVISOR_USERNAME / $SUPERVISOR_PASSWORD, as supervisorctl takes them.
    """
    env = os.environ if env is None else env
    url, user, password = split_credentials(server_url)
    user = user or env.get("SUPERVISOR_USERNAME", "")
    password = password or env.get("SUPERVISOR_PASSWORD", "")
    transport = SupervisorTransport(user or None, password or None, url)
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport, allow_none=True)
