"""Keep secrets out of everything the listener publishes: errors, log tails.

The known secret values (the OpenRouter keys and the master key, read from the
0600 LiteLLM config) are replaced wherever they appear; patterns catch keys
this process was never told about (``sk-...``, bearer tokens).
"""

from __future__ import annotations

import base64
import json
import os
import re
from typing import Iterable, List, Sequence, Set
from urllib.parse import quote, quote_plus

import yaml

from sidecar_plugin.core.state.text import banner_line, printable

MASK = "[REDACTED]"
_PATTERNS = [
    re.compile(r"sk-[A-Za-z0-9_\-]{8,}"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=\-]{8,}"),
    re.compile(r"(?i)((?:api[_-]?key|master[_-]?key|authorization|x-api-key)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]{6,}"),
]


_BASIC = re.compile(r"(?i)(basic\s+)[A-Za-z0-9+/=]{8,}")
_MIN_CHUNK = 8


def encoded_forms(secret: str) -> Set[str]:
    """Return the forms a secret takes in logs: as is, URL-encoded, JSON-escaped, and inside base64.

    ``Authorization: Basic base64(user:pass)`` puts the secret at any offset
    of the encoded bytes; for each of the three offsets modulo 3, the whole
    3-byte groups of the secret encode to the same characters wherever it
    sits, so those characters are a form to mask too.
    """
    forms = {secret, quote(secret, safe=""), quote(secret), quote_plus(secret)}
    escaped = json.dumps(secret)[1:-1]
    forms |= {escaped, escaped.replace("/", "\\/")}
    raw = secret.encode("utf-8")
    for offset in range(3):
        skip = (3 - offset) % 3
        whole = (len(raw) - skip) // 3 * 3
        if whole > 0:
            chunk = base64.b64encode(raw[skip:skip + whole]).decode("ascii")
            forms |= {chunk, chunk.replace("+", "-").replace("/", "_")}
    return {f for f in forms if len(f) >= _MIN_CHUNK or f == secret}


def _split_pattern(secret: str) -> str:
    """A secret cut by a line break somewhere inside it (a wrapped log line)."""
    return "(?:\r?\n)?".join(re.escape(ch) for ch in secret)


class Redactor:
    """Replace known secrets (and their encoded forms) and secret-looking tokens with a mask."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets: List[str] = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)
        forms: Set[str] = set()
        for s in self.secrets:
            forms |= encoded_forms(s)
        self.forms: List[str] = sorted(forms, key=len, reverse=True)
        long_ones = [s for s in self.secrets if len(s) >= _MIN_CHUNK]
        self._split = re.compile("|".join(_split_pattern(s) for s in long_ones)) if long_ones else None

    def __call__(self, text: str) -> str:
        for s in self.forms:
            text = text.replace(s, MASK)
        if self._split is not None and "\n" in text:
            text = self._split.sub(lambda m: MASK + "\n" * m.group(0).count("\n"), text)
        text = _PATTERNS[0].sub(MASK, text)
        text = _PATTERNS[1].sub(lambda m: m.group(1) + MASK, text)
        text = _BASIC.sub(lambda m: m.group(1) + MASK, text)
        return _PATTERNS[2].sub(lambda m: m.group(1) + MASK, text)

    def lines(self, lines: Sequence[str]) -> List[str]:
        """Redact lines together, so a secret wrapped onto the next line is still found; same count back."""
        if not lines:
            return []
        out = self("\n".join(lines)).split("\n")
        return out if len(out) == len(lines) else [self(line) for line in lines]


def secrets_from_config(config_path: str) -> List[str]:
    """Return the secret values of a rendered LiteLLM config (empty if unreadable)."""
    try:
        with open(config_path, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh) or {}
    except (OSError, yaml.YAMLError, ValueError):
        return []
    found: List[str] = []
    if not isinstance(doc, dict):
        return found
    settings = doc.get("general_settings")
    master = settings.get("master_key") if isinstance(settings, dict) else None
    if isinstance(master, str):
        found.append(master)
    for entry in doc.get("model_list") or []:
        params = entry.get("litellm_params") if isinstance(entry, dict) else None
        key = params.get("api_key") if isinstance(params, dict) else None
        if isinstance(key, str) and not key.startswith("os.environ/"):
            found.append(key)
    return found


def tail_lines(path: str, count: int = 40, max_bytes: int = 64 * 1024, skip: str = "") -> List[str]:
    """Return the last ``count`` lines of a log file, reading at most ``max_bytes``.

    Lines holding ``skip`` are left out: the sidecar logs each of the
    listener's health probes, and a crash's tail must show the sidecar's own
    last words, not a page of ``GET /health/liveliness 200``. Nor LiteLLM's
    start banner and blank lines (``banner_line``): a port already in use
    fails right after the banner, whose 20 lines hid the reason.
    """
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError:
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    if size > max_bytes and lines:
        lines = lines[1:]
    lines = [line for line in lines if not banner_line(line) and not (skip and skip in line)]
    return [printable(line)[:500] for line in lines[-count:]]
