"""Text fit for a terminal and for XML-RPC: no escape sequences, no control characters.

A crashed LiteLLM's last lines are shown to people (``status``,
``supervisorctl sidecar status``) and sent through supervisord's XML-RPC,
whose XML cannot carry most control characters at all: one ``\\x01`` in a
log tail made ``sidecar.getState`` fail for everyone. LiteLLM colours its own
banner with ANSI escapes, so this is the normal case, not an attack.
"""

from __future__ import annotations

import re

_ESCAPES = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def printable(text: str) -> str:
    """Return ``text`` without terminal escape sequences; other control characters become ``?``."""
    return _UNPRINTABLE.sub("?", _ESCAPES.sub("", text))
