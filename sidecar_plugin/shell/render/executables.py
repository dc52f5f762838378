"""Where the two programs supervisord runs are: LiteLLM's binary and this package's CLI (the listener).

Both are written into supervisord's include as absolute paths, resolved when
rendering: supervisord's PATH is not the operator's, and neither is its
virtualenv.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from typing import Sequence, Tuple

from sidecar_plugin.errors import BinaryNotFoundError


def resolve_binary(binary: str, extra_dirs: Sequence[str] = ()) -> str:
    """Return the absolute path of ``binary`` or raise BinaryNotFoundError.

    Resolved at render time because supervisord's PATH is not the operator's.
    The interpreter's own bin folder is searched after PATH, so a LiteLLM
    installed in the same virtualenv is found without activating it.
    """
    if os.sep in binary:
        path = os.path.abspath(binary)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
        raise BinaryNotFoundError(os.path.basename(binary) or binary)
    found = shutil.which(binary)
    if found is None:
        for folder in extra_dirs:
            found = shutil.which(binary, path=folder)
            if found:
                break
    if found is None:
        raise BinaryNotFoundError(os.path.basename(binary) or binary)
    return os.path.abspath(found)


def listener_entry_point() -> Tuple[str, ...]:
    """Return the absolute command that runs this package's CLI under supervisord."""
    script = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "sidecar-plugin")
    if os.path.isfile(script) and os.access(script, os.X_OK):
        return (script,)
    return (os.path.abspath(sys.executable), "-m", "sidecar_plugin")


def litellm_launcher(binary: str) -> Tuple[str, ...]:
    """Return (LiteLLM's interpreter, the launcher folder) when ``binary`` is LiteLLM's own entry point.

    The entry point pip or pipx writes is a Python script importing
    ``litellm``; its first line names the interpreter of that install (or pip's
    ``/bin/sh`` trick for long paths). Anything else (a wrapper, a stand-in)
    gets the socket on fd 0 and runs as given: empty.
    """
    try:
        with open(binary, "rb") as fh:
            head = fh.read(4096).decode("utf-8", "replace")
    except OSError:
        return ()
    lines = head.splitlines()
    if not lines or not lines[0].startswith("#!") or "litellm" not in head:
        return ()
    interpreter = lines[0][2:].strip().split(" ")[0]
    if os.path.basename(interpreter) == "sh" and len(lines) > 1 and lines[1].startswith("'''exec' "):
        try:  # '''exec' "/srv/my venv/bin/python" "$0" "$@": quoted where the path has a space
            interpreter = shlex.split(lines[1])[1]
        except (ValueError, IndexError):
            return ()
    if not os.path.basename(interpreter).startswith("python") or not os.path.isabs(interpreter):
        return ()
    from sidecar_plugin.shell import litellm_launch

    return (interpreter, os.path.dirname(os.path.abspath(litellm_launch.__file__)))
