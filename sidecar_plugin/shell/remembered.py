"""The request of one ``render`` or ``apply``: the options given, on top of those the out-dir's record kept.

``core.remember`` decides (merge, change lines); this reads the previous
record and makes the given paths absolute before they are kept (a relative
``--state-file`` would mean another file from another working directory).
"""

from __future__ import annotations

import os
from dataclasses import fields
from typing import Any, List, Mapping, Sequence, Tuple

from sidecar_plugin.core.remember import KINDS, changes, dest, merge, problem, recorded
from sidecar_plugin.core.render_options import RenderError
from sidecar_plugin.names import RECORD_NAME
from sidecar_plugin.shell.build import RenderRequest
from sidecar_plugin.shell.previous import previous_record

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


def request(profiles: Sequence[str], out_dir: str, given: Mapping[str, Any],
            resets: Sequence[str] = ()) -> Tuple[RenderRequest, List[str]]:
    """Return the request (the record's options, less ``resets``, under ``given``) and the change lines."""
    both = sorted(set(given) & set(resets))
    if both:
        raise RenderError(f"--reset {both[0]}: --{both[0]} is given too; give one of them")
    record = previous_record(out_dir)
    before = recorded(record)
    options = merge(before or {}, given, resets)
    for name, value in options.items():
        why = problem(name, value)
        if why:  # only a recorded value can be bad: the given ones were parsed
            raise RenderError(f"{os.path.join(os.path.abspath(out_dir), RECORD_NAME)}: options.{name}: {why} "
                              f"({value!r:.40}); give --{name} or --reset {name}")
    defaults = {f.name: f.default for f in fields(RenderRequest)}
    lines = changes(before, options, {n: defaults[dest(n)] for n in KINDS}) if record else []
    req = RenderRequest(profiles=list(profiles), out_dir=out_dir, remember=tuple(options.items()),
                        **{dest(n): v for n, v in options.items()})
    return req, lines
