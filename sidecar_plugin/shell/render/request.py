"""The request of one ``render`` or ``apply``: the options given, on top of those the out-dir's record kept.

``core.options.remember`` decides (merge, change lines); this reads the previous
record (or, for an older release's record, what its ``sidecar.conf`` says:
``core.options.readback``) and the profile's port (a changed one takes over from a
kept ``--port``), and makes the given paths absolute before they are kept (a
relative ``--state-file`` would mean another file from another working directory).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence

from sidecar_plugin.core.profiles.agentroute import load_profile
from sidecar_plugin.core.options.readback import read_back
from sidecar_plugin.core.options.remember import (
    KINDS, changes, dest, merge, port_line, problem, profile_takes_port, read_back_lines, recorded,
)
from sidecar_plugin.core.render.terms import RenderError
from sidecar_plugin.errors import BinaryNotFoundError
from sidecar_plugin.names import PROFILE_PORT, RECORD_NAME, SIDECAR_CONF
from sidecar_plugin.shell.render.build import RenderRequest, expand_profiles
from sidecar_plugin.shell.render.executables import resolve_binary
from sidecar_plugin.shell.render.record import previous_include, read_record

PATHS = ("state-file", "log-file", "metrics-file")


def given_options(values: Mapping[str, Any]) -> dict:
    """The options given on the command line (``None``: not given), by option name, paths made absolute."""
    out = {}
    for name in KINDS:
        value = values.get(dest(name))
        if value is None:
            continue
        if value and (name in PATHS or name == "binary" and os.sep in value):
            value = os.path.abspath(value)
        out[name] = value
    return out


class Asked(NamedTuple):
    """A render's request, the lines of the options that change, and the warnings to print once."""

    req: RenderRequest
    lines: List[str]
    warnings: List[str]


def request(profiles: Sequence[str], out_dir: str, given: Mapping[str, Any], resets: Sequence[str] = ()) -> Asked:
    """Return the request (the record's options, less ``resets``, under ``given``), its lines and warnings."""
    both = sorted(set(given) & set(resets))
    if both:
        raise RenderError(f"--reset {both[0]}: --{both[0]} is given too; give one of them")
    record, trouble = read_record(out_dir)
    where = os.path.join(os.path.abspath(out_dir), RECORD_NAME)
    defaults = {n: getattr(RenderRequest, dest(n)) for n in KINDS}
    before, read = recorded(record), {}
    warnings = [f"{trouble}; the options given to earlier renders are read back from {SIDECAR_CONF}"] if trouble else []
    if before is None:  # an older release's record, or none usable: what its include says it was given
        read = read_back(previous_include(out_dir), os.path.abspath(out_dir), dict(defaults, binary=_binary()))
        before = dict(read)
    options = merge(before, given, resets)
    for name, value in options.items():
        why = problem(name, value)
        if why:  # only a recorded value can be bad: the given ones were parsed
            raise RenderError(f"{where}: options.{name}: {why} ({value!r:.40}); give --{name} or --reset {name}")
    had_port = "port" in options
    lines = _port_taken(options, given, profiles, record)
    if had_port and "port" not in options:  # taken over by the profile: said by its own line
        before = {k: v for k, v in before.items() if k != "port"}
    lines = changes(before, options, defaults) + lines
    lines += read_back_lines({k: v for k, v in read.items() if k not in given}, options)
    kept = tuple((n, v, f"the previous render's {SIDECAR_CONF}" if n in read else where)
                 for n, v in options.items() if n not in given)
    req = RenderRequest(profiles=list(profiles), out_dir=out_dir, remember=tuple(options.items()), kept=kept,
                        **{dest(n): v for n, v in options.items()})
    return Asked(req, lines if record or read else [], warnings)


def _port_taken(options: Dict[str, Any], given: Mapping[str, Any], profiles: Sequence[str],
                record: Mapping[str, Any]) -> List[str]:
    """Drop a kept ``--port`` the profile's changed port takes over from (``core.options.remember``); its line."""
    if "port" not in options or "port" in given:
        return []
    now = _profile_port(profiles)
    if now is None or not profile_takes_port(now, record.get(PROFILE_PORT)):
        return []
    kept = options.pop("port")
    return [port_line(kept, now)] if kept != now else []


def _profile_port(profiles: Sequence[str]) -> Optional[int]:
    """The port one profile gives (None: none, a fleet, or a profile build will refuse with its own line)."""
    try:
        paths, grouped = expand_profiles(profiles)
        return None if grouped else load_profile(paths[0]).port
    except (OSError, ValueError):
        return None


def _binary() -> str:
    """Where the default binary (``litellm``) is found now: an include naming it was not given ``--binary``."""
    try:
        return resolve_binary("litellm", extra_dirs=[os.path.dirname(os.path.abspath(sys.executable))])
    except (OSError, BinaryNotFoundError):
        return ""
