"""Where the two programs supervisord runs are: LiteLLM's binary and this package's CLI (the listener).

Both are written into supervisord's include as absolute paths, resolved when
rendering: supervisord's PATH is not the operator's, and neither is its
virtualenv.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from typing import Optional, Sequence, Tuple

from sidecar_plugin.errors import BinaryNotFoundError
from sidecar_plugin.names import FD0_MARKER

# Version managers whose shims are shell scripts that ask them which executable to run: ``X which NAME`` answers.
SHIM_MANAGERS = ("pyenv", "asdf")
SHIM_TIMEOUT = 10.0


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
    ``/bin/sh`` trick for long paths). Anything else (a wrapper, a stand-in): empty.
    """
    head = _head(binary)
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


def _head(binary: str) -> str:
    try:
        with open(binary, "rb") as fh:
            return fh.read(4096).decode("utf-8", "replace")
    except OSError:
        return ""


def takes_fd0(binary: str) -> bool:
    """Whether ``binary`` says it serves supervisord's socket on fd 0 (the line ``# sidecar-plugin: fd 0``).

    A server other than LiteLLM's entry point (the tests' stand-in, a site's own) opts in this way; any other
    wrapper execs LiteLLM's CLI, which binds the port itself and would never serve supervisord's socket.
    """
    return any(line.strip().lstrip("#").strip() == FD0_MARKER for line in _head(binary).splitlines())


def shim_target(binary: str) -> Optional[str]:
    """Return what a pyenv or asdf shim runs (asked of the version manager, as the shim would), or None.

    Such a shim is a shell script ending in ``exec MANAGER exec NAME "$@"``; resolved now, as PATH is, so
    supervisord runs LiteLLM's own entry point and the port can be held for it.
    """
    for line in reversed(_head(binary).splitlines()):
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        if len(words) < 3 or words[0] != "exec" or os.path.basename(words[1]) not in SHIM_MANAGERS \
                or words[2] != "exec":
            continue
        manager = words[1] if os.path.isabs(words[1]) else shutil.which(words[1])
        env = dict(os.environ)
        for other in _head(binary).splitlines():  # export PYENV_ROOT="..." in pyenv's shims
            if other.startswith("export ") and "=" in other:
                key, _, value = other[7:].partition("=")
                env[key.strip()] = value.strip().strip('"')
        name = os.path.basename(binary)
        try:
            res = subprocess.run([manager or words[1], "which", name], capture_output=True, text=True, env=env,
                                 timeout=SHIM_TIMEOUT, stdin=subprocess.DEVNULL, cwd="/")
        except (OSError, subprocess.SubprocessError):
            return None
        found = res.stdout.strip().splitlines()[-1:] if res.returncode == 0 else []
        if found and os.path.isabs(found[0]) and os.access(found[0], os.X_OK):
            return found[0]
        return None
    return None
