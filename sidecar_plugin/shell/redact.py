"""Keep secrets out of everything the listener publishes: errors, log tails.

The known secret values (the OpenRouter keys and the master key, read from the
0600 LiteLLM config) are replaced wherever they appear; patterns catch keys
this process was never told about (``sk-...``, bearer tokens).
"""

from __future__ import annotations

import os
import re
from typing import Iterable, List, Sequence

import yaml

MASK = "[REDACTED]"
_PATTERNS = [
    re.compile(r"sk-[A-Za-z0-9_\-]{8,}"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=\-]{8,}"),
    re.compile(r"(?i)((?:api[_-]?key|master[_-]?key|authorization|x-api-key)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]{6,}"),
]


class Redactor:
    """Replace known secrets and secret-looking tokens with a mask."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets: List[str] = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, MASK)
        text = _PATTERNS[0].sub(MASK, text)
        text = _PATTERNS[1].sub(lambda m: m.group(1) + MASK, text)
        return _PATTERNS[2].sub(lambda m: m.group(1) + MASK, text)

    def lines(self, lines: Sequence[str]) -> List[str]:
        return [self(line) for line in lines]


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
    master = (doc.get("general_settings") or {}).get("master_key") if isinstance(doc.get("general_settings"), dict) else None
    if isinstance(master, str):
        found.append(master)
    for entry in doc.get("model_list") or []:
        params = entry.get("litellm_params") if isinstance(entry, dict) else None
        key = params.get("api_key") if isinstance(params, dict) else None
        if isinstance(key, str) and not key.startswith("os.environ/"):
            found.append(key)
    return found


def tail_lines(path: str, count: int = 40, max_bytes: int = 64 * 1024) -> List[str]:
    """Return the last ``count`` lines of a log file, reading at most ``max_bytes``."""
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
    return [line[:500] for line in lines[-count:]]
