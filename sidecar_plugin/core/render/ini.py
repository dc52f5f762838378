"""Write values into supervisord's configuration so that it reads back exactly what was meant.

supervisord reads an include with ``configparser`` (values stripped, ``;`` or
``#`` after whitespace starts a comment, a newline starts another line or a
section), expands ``%(name)s`` itself, splits ``command=`` with ``shlex``
(POSIX rules) and ``environment=`` with a non-POSIX ``shlex`` (a quoted value
cannot hold its own quote; ``#`` outside quotes is a comment). A path with a
newline in it could add a ``[program:]`` that root's supervisord runs; a path
with `` ;`` would silently cut a command short. Each writer here either
returns text that round-trips or raises IniError naming the value: the caller
refuses the input with one line before anything is written.
"""

from __future__ import annotations

import re
import shlex
from typing import Sequence

from sidecar_plugin.errors import SidecarError

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]")
_INLINE_COMMENT = re.compile(r"\s[;#]")


class IniError(SidecarError, ValueError):
    """A value cannot be written into supervisord's configuration as it is."""


def shown(value: str, limit: int = 80) -> str:
    """Return ``value`` quoted for an error line: escapes visible, bounded, one line."""
    text = value.encode("unicode_escape", "backslashreplace").decode("ascii")
    return repr(text if len(text) <= limit else text[:limit - 3] + "...")


def check_text(value: str, what: str) -> str:
    """Refuse what no supervisord line can hold: control characters, text that is not UTF-8."""
    if _CONTROL.search(value):
        raise IniError(f"{what}: {shown(value)} holds a newline or another control character; "
                       "supervisord's configuration cannot hold it")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise IniError(f"{what}: {shown(value)} is not valid UTF-8 text") from None
    return value


def _check_line_value(text: str, what: str, original: str) -> None:
    check_text(text, what)
    if _INLINE_COMMENT.search(text):
        raise IniError(f"{what}: {shown(original)} holds ';' or '#' after a space, "
                       "which supervisord reads as the start of a comment")


def raw(value: str, what: str) -> str:
    """Return ``value`` for a plain setting (``directory=``, ``stdout_logfile=``): ``%`` doubled."""
    _check_line_value(value, what, value)
    if value != value.strip():
        raise IniError(f"{what}: {shown(value)} starts or ends with a space, which supervisord drops")
    return value.replace("%", "%%")


def logfile(value: str, what: str) -> str:
    """Return a path for ``stdout_logfile=``/``stderr_logfile=``: supervisord expands these twice."""
    return raw(value, what).replace("%", "%%")


def command(argv: Sequence[str], what: str = "command") -> str:
    """Return ``argv`` as a ``command=`` value that supervisord splits back into the same list.

    Every argument is shell-quoted (POSIX shlex), then ``%`` is doubled for
    supervisord's own expansion. A space inside a quoted argument followed
    by ``;`` or ``#`` would still end the line for configparser, so such an
    argument is refused.
    """
    for arg in argv:
        check_text(arg, what)
    text = " ".join(shlex.quote(a) for a in argv)
    for arg in argv:
        if _INLINE_COMMENT.search(shlex.quote(arg)):
            raise IniError(f"{what}: {shown(arg)} holds ';' or '#' after a space, "
                           "which supervisord reads as the start of a comment")
    _check_line_value(text, what, text)
    return text.replace("%", "%%")


def env_value(value: str, what: str) -> str:
    """Return ``value`` quoted for ``environment=KEY=...`` so supervisord reads it back unchanged."""
    _check_line_value(value, what, value)
    if value != value.strip() or value[:1] in "'\"" or value[-1:] in "'\"":
        raise IniError(f"{what}: {shown(value)} starts or ends with a space or a quote, "
                       "which supervisord's environment= drops")
    if '"' not in value:
        quoted = f'"{value}"'
    elif "'" not in value:
        quoted = f"'{value}'"
    else:
        raise IniError(f"{what}: {shown(value)} holds both kinds of quotes; supervisord's environment= cannot hold it")
    return quoted.replace("%", "%%")


def comment(value: str, what: str) -> str:
    """Return ``value`` for a ``;`` comment line: one line, nothing else to escape."""
    return check_text(value, what)
