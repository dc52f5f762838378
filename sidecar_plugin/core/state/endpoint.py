"""Where a client reaches the sidecar and where the key it must send is kept.

The gateway needs two things besides "is it up?": the base URL to send
``/v1/messages`` to, and the master key to send as ``Authorization: Bearer``.
The listener publishes both in the state file (``base_url``, ``key_file``:
a path, never the key), so a gateway process finds them without parsing
supervisord's configuration. Which file holds the key is ``shell.files.keyfile``'s
question (it reads files); the URL is pure.
"""

from __future__ import annotations

from typing import Any, Dict

_WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1"}


def connect_host(host: str) -> str:
    """Return the address a client on this host connects to when the sidecar binds ``host``.

    A sidecar bound to every address (``0.0.0.0``, ``::``) is reached on loopback.
    """
    return _WILDCARDS.get(host, host)


def base_url(host: str, port: int) -> str:
    """Return ``http://<host>:<port>``, the URL the gateway sends Anthropic requests to."""
    address = connect_host(host)
    if ":" in address and not address.startswith("["):
        address = f"[{address}]"  # an IPv6 literal in a URL
    return f"http://{address}:{port}"


def with_base_url(doc: Dict[str, Any]) -> Dict[str, Any]:
    """Give a state document its ``base_url``: a file written before the field existed has host and port."""
    if not doc.get("base_url") and isinstance(doc.get("port"), int) and not isinstance(doc.get("port"), bool):
        doc["base_url"] = base_url(str(doc.get("host") or "127.0.0.1"), doc["port"])
    return doc
