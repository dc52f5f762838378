"""Name the key a profile probably meant: ``prot`` -> ``port``, ``modles`` -> ``models``.

A profile may carry keys this package does not read (AgentRoute's own
``created``, fields a newer AgentRoute adds, an operator's notes): those load
in silence, so a profile is never refused for them. A key that is *close* to
a known one is a typo, though, and a typo that passes in silence renders a
sidecar on the wrong port. So each near miss gets one warning line, returned
as data (the core prints nothing; the faces write it to stderr), and a
required field missing beside its near miss is refused naming what was found.
"""

from __future__ import annotations

import difflib
import json
from typing import Any, Dict, List, Mapping, Sequence, Tuple

MAX_WARNINGS = 10
CUTOFF = 0.6  # difflib's own default: prot/port 0.75, modles/models 0.83; description, tags, future_field: none


def near_misses(data: Mapping[Any, Any], known: Sequence[str]) -> Dict[str, str]:
    """Map each unknown top-level key that is close to one of ``known`` to that key."""
    out: Dict[str, str] = {}
    for key in data:
        if isinstance(key, str) and key not in known and len(key) <= 40:
            match = difflib.get_close_matches(key, known, n=1, cutoff=CUTOFF)
            if match:
                out[key] = match[0]
    return out


def shown(key: str) -> str:
    """A key as an error line shows it: as written when printable, else JSON-quoted."""
    return key if key.isprintable() else json.dumps(key)


def key_warnings(misses: Mapping[str, str], source: str) -> Tuple[str, ...]:
    """Return one warning line per near miss (at most MAX_WARNINGS, then how many more)."""
    lines: List[str] = [f"{source}: {shown(key)}: unknown key, ignored; did you mean {known}?"
                        for key, known in list(misses.items())[:MAX_WARNINGS]]
    if len(misses) > MAX_WARNINGS:
        lines.append(f"{source}: {len(misses) - MAX_WARNINGS} more unknown keys close to known ones, ignored")
    return tuple(lines)


def found_instead(misses: Mapping[str, str], wanted: str) -> str:
    """The end of a "required" error line: the near miss of ``wanted`` written instead, if any."""
    found = [key for key, known in misses.items() if known == wanted]
    return f"; did you mean {wanted} (found {shown(found[0])})?" if found else ""
