"""From an AgentRoute profile name to a supervisord program name, for fleets.

AgentRoute accepts any non-empty profile name without ``/`` or ``\\``
(``my work``, ``Über-Team``, ``工作``); supervisord, its include file and the
folder each fleet sidecar gets need ``[A-Za-z0-9][A-Za-z0-9._-]*``. The rule
is deterministic (same name, same program: ``apply`` and the gateway must find
the same sidecar on every render) and keeps every name that was already valid
unchanged, so a fleet rendered before this rule keeps its programs:

1. a name made of ASCII letters, digits, ``.``, ``_`` and ``-`` that starts
   with a letter or a digit is kept as it is (``work`` -> ``work``);
2. otherwise accents are dropped (Unicode NFKD, combining marks removed:
   ``Über`` -> ``Uber``), every run of other characters becomes one ``-``
   and ``-``, ``.`` and ``_`` are trimmed from both ends
   (``my work`` -> ``my-work``);
3. when nothing is left (``工作``, ``***``) the name becomes the first 8 hex
   digits of the SHA-256 of its UTF-8 bytes; a result longer than 64
   characters is cut to 55 and given ``-`` and those 8 digits.

The program is ``agentroute-`` and that. Two profiles of a fleet that end up
with one program (``my work`` and ``my-work``) are refused with one line
naming both files: renaming one is the operator's call, not ours.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Collection, Dict, Sequence

from sidecar_plugin.core.profiles.agentroute import Profile, ProfileError

SAFE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9._-]+")
MAX_DERIVED = 64
DIGEST_CHARS = 8


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:DIGEST_CHARS]


def program_slug(name: str) -> str:
    """Return the supervisord-safe part of the program name of profile ``name`` (the rule above)."""
    if SAFE_RE.match(name):
        return name
    text = "".join(ch for ch in unicodedata.normalize("NFKD", name) if not unicodedata.combining(ch))
    text = _UNSAFE_RUN.sub("-", text).strip("-._")
    if not text:
        return _digest(name)
    if len(text) > MAX_DERIVED:
        text = text[:MAX_DERIVED - DIGEST_CHARS - 1].rstrip("-._") + "-" + _digest(name)
    return text


def program_name(name: str, group: str) -> str:
    """Return the program of profile ``name`` in the fleet ``group``: ``GROUP-<slug>``."""
    return f"{group}-{program_slug(name)}"


def fleet_programs(profiles: Sequence[Profile], group: str, reserved: Collection[str] = ()) -> Dict[str, str]:
    """Map each profile name to its program; refuse two profiles sharing one, or a reserved name.

    ``reserved`` holds the names the fleet already uses for itself (its listener).
    """
    owner: Dict[str, Profile] = {}
    programs: Dict[str, str] = {}
    for p in profiles:
        program = program_name(p.name, group)
        if program in reserved:
            raise ProfileError(f"{p.source}: name: {p.name!r} is taken by the fleet's listener ({program})")
        other = owner.get(program)
        if other is not None:
            if other.name == p.name:
                raise ProfileError(f"{p.source}: name: {p.name!r} is also the name of {other.source}")
            raise ProfileError(f"{p.source}: name: {p.name!r} becomes the program {program}, as {other.name!r} "
                               f"of {other.source} does; rename one of them")
        owner[program] = p
        programs[p.name] = program
    return programs
