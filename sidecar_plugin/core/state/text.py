"""Text fit for a terminal and for XML-RPC: no escape sequences, no control characters.

A crashed LiteLLM's last lines are shown to people (``status``,
``supervisorctl sidecar status``) and sent through supervisord's XML-RPC,
whose XML cannot carry most control characters at all: one ``\\x01`` in a
log tail made ``sidecar.getState`` fail for everyone. LiteLLM colours its own
banner with ANSI escapes, so this is the normal case, not an attack.

That banner (a block of ``█``/``╗`` art, a ``#...#`` feedback box, thanks and
a link) fills some 20 lines at every start; in a crash's log tail it pushed
out the lines that say why (``banner_line`` leaves it out).
"""

from __future__ import annotations

import re

_ESCAPES = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def printable(text: str) -> str:
    """Return ``text`` without terminal escape sequences; other control characters become ``?``."""
    return _UNPRINTABLE.sub("?", _ESCAPES.sub("", text))


# Lines of LiteLLM's start banner, as 1.106.2 prints it (the art, the feedback box, the words around it).
_ART = re.compile("[\u2500-\u259f\\s]+")  # box drawing and block elements only: ``██╗``, ``╚═╝``
_BOX = re.compile(r"#[-#\s]*#|#\s.*\s#")  # ``#----#``, ``#   'I don't like how this works...'   #``
_WORDS = ("Thank you for using LiteLLM", "Give Feedback / Get Help")


def banner_line(line: str) -> bool:
    """Whether a log line is LiteLLM's start banner or blank: words that never say why it failed."""
    text = printable(line).strip()
    if not text or _ART.fullmatch(text) or _BOX.fullmatch(text):
        return True
    return any(text.startswith(words) for words in _WORDS)
