"""Which file holds the master key a client must send: ``master.key`` or the sidecar's config.

Published by the listener as ``key_file`` in the state file (a path, never
the key), and asked by ``Sidecar.key_file()`` when the state file cannot say.
"""

from __future__ import annotations

import hmac
import os
from typing import Dict, Optional, Tuple

import yaml

from sidecar_plugin.names import MASTER_KEY as MASTER_KEY_NAME


def configured_master_key(config_path: str) -> Optional[str]:
    """Return ``general_settings.master_key`` of a rendered LiteLLM config, or None when unreadable."""
    try:
        with open(config_path, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError, ValueError):
        return None
    settings = doc.get("general_settings") if isinstance(doc, dict) else None
    key = settings.get("master_key") if isinstance(settings, dict) else None
    return key if isinstance(key, str) and key else None


def key_file_candidates(config_path: str) -> Tuple[str, str]:
    """Return where render keeps a generated key: beside the config (one sidecar), one folder up (a fleet)."""
    folder = os.path.dirname(os.path.abspath(config_path))
    return os.path.join(folder, MASTER_KEY_NAME), os.path.join(os.path.dirname(folder), MASTER_KEY_NAME)


def find_key_file(config_path: str) -> Optional[str]:
    """Return the file that holds the master key the sidecar checks, or None when unknown.

    ``master.key`` when it holds the key of the config (render generated it);
    else the config itself (``general_settings.master_key``): the key was
    given in the environment, so the gateway that gave it already has it. A
    ``master.key`` left from an earlier render with another key is never named.
    """
    if not config_path:
        return None
    key = configured_master_key(config_path)
    if key is None:
        return None
    for candidate in key_file_candidates(config_path):
        try:
            with open(candidate, encoding="utf-8") as fh:
                saved = fh.read(4096).strip()
        except (OSError, UnicodeDecodeError):
            continue
        if saved and hmac.compare_digest(saved.encode(), key.encode()):
            return candidate
    return os.path.abspath(config_path)


class KeyFileCache:
    """``find_key_file`` that re-reads the files only when one of them changed.

    The listener refreshes the state file every 2 s; reading and parsing the
    config each time would be waste, a ``stat`` of three files is not.
    """

    def __init__(self) -> None:
        self._seen: Dict[str, Tuple[Tuple[Optional[Tuple[int, int, int]], ...], Optional[str]]] = {}

    def lookup(self, config_path: str) -> Optional[str]:
        if not config_path:
            return None
        stamp = tuple(_stamp(p) for p in (config_path,) + key_file_candidates(config_path))
        seen = self._seen.get(config_path)
        if seen is not None and seen[0] == stamp:
            return seen[1]
        found = find_key_file(config_path)
        self._seen[config_path] = (stamp, found)
        return found


def _stamp(path: str) -> Optional[Tuple[int, int, int]]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size
