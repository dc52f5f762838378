"""The options a render remembers: given once to ``render`` or ``apply``, kept until given again.

``apply`` runs on every pass of a configuration tool, often with fewer
options than the render before it: ``apply --health-timeout 60`` then
``apply --profile ...`` must not silently put the default back. So each render
records in its ``sidecar.json`` the options the operator *gave* (never the
defaults: an option never given follows the package's default, also when a
new release changes it), and the next render or apply takes every option it
is not given from there. ``--reset OPTION`` forgets one (``all``: every one).
Every render writes ``options`` (``{}`` when none is kept): a record without
it is an older release's, whose options are read back from its include
(``core.options.readback``).

Pure: the record is read and the request built by ``shell.render.request``; the
options and their defaults are declared in ``core.options.table``.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from sidecar_plugin.core.options.table import RENDER, of

# option name (the flag without --) -> the kind of value the record must hold: every option of render
KINDS: Dict[str, str] = {o.name: o.kept for o in of(RENDER)}
RESET_ALL = "all"


def dest(name: str) -> str:
    """The attribute of an option (``health-timeout`` -> ``health_timeout``)."""
    return name.replace("-", "_")


def problem(name: str, value: Any) -> Optional[str]:
    """Why a recorded value cannot be the option's value (the record may be old or edited), or None."""
    kind = KINDS[name]
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "int" and not (number and isinstance(value, int)):
        return "not a whole number"
    if kind == "seconds" and not (number and math.isfinite(value) and value > 0):
        return "not a finite number of seconds above 0"
    if kind == "text" and not isinstance(value, str):
        return "not a string"
    if kind == "flag" and value is not True:
        return "not true"
    return None


def recorded(record: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """The options a record holds (unknown names dropped); None: an older record, or options no mapping."""
    options = record.get("options")
    if not isinstance(options, dict):
        return None
    return {k: v for k, v in options.items() if k in KINDS}


def merge(before: Mapping[str, Any], given: Mapping[str, Any], resets: Sequence[str]) -> Dict[str, Any]:
    """The options to render with and record: the recorded ones, less those reset, with the given ones on top."""
    everything = RESET_ALL in resets
    out = {k: v for k, v in before.items() if not everything and k not in resets}
    out.update(given)
    return dict(sorted(out.items()))


def shown(value: Any) -> str:
    """A value as a change line shows it."""
    if value is None or value == "":
        return "(default)" if value is None else "(none)"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def changes(before: Mapping[str, Any], after: Mapping[str, Any], defaults: Mapping[str, Any]) -> List[str]:
    """One line per option whose value changes, ``health-timeout: 60 -> 300``."""
    lines = []
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name, defaults[name]), after.get(name, defaults[name])
        if old != new:
            lines.append(f"{name}: {shown(old)} -> {shown(new)}")
    return lines


def read_back_lines(read: Mapping[str, Any], after: Mapping[str, Any]) -> List[str]:
    """One line per option read back from an older render's include and kept as it was."""
    return [f"{k}: {shown(v)} (kept from the previous render's sidecar.conf)"
            for k, v in sorted(read.items()) if after.get(k) == v]


def profile_takes_port(profile_port: Optional[int], profile_port_then: Any) -> bool:
    """Whether the profile's port replaces a kept (not given) ``--port``.

    An operator who edits the profile's port expects it to take effect: the
    profile wins when it gives a port and not the one it gave when the
    ``--port`` was given (``profile_port_then``; None: it gave none, or the
    render did not say). A ``--port`` given on the command line always wins.
    """
    return profile_port is not None and profile_port != profile_port_then


def port_line(kept: Any, profile_port: int) -> str:
    """The line saying that the profile's changed port takes over from a kept ``--port``."""
    return (f"port: {shown(kept)} -> {profile_port} (the profile's port changed since --port {shown(kept)} was "
            "given: the profile's wins and the kept --port is forgotten; give --port to override it)")


def blamed(message: str, kept: Sequence[Tuple[str, Any, str]]) -> str:
    """``message``, naming where a kept option it is about comes from and how to forget it.

    ``kept``: (option, value, where it was kept) of each option not given now.
    A message about an option (``--port: ...``, or the value itself, as in
    ``MY_KEY is not set``) must not read as if the option was given.
    """
    for name, value, where in kept:
        if message.startswith((f"--{name}:", f"--{name} ")) or (
                isinstance(value, str) and len(value) > 1 and message.startswith(value + " ")):
            return (f"{message}; --{name} {shown(value)} is kept from an earlier render ({where}): "
                    f"--reset {name} forgets it (or give --{name})")
    return message
