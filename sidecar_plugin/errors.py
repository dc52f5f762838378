"""The errors clients catch, each with a message a person can act on.

Like the Go package's ``ErrBinaryNotFound``: say what is missing, the exact
fix, and where to read more.
"""

from __future__ import annotations

from typing import Sequence

# The LiteLLM this release is tested with (setup.cfg's ``litellm`` extra pins it; tests/unit/test_render.py checks).
LITELLM_VERSION = "1.106.2"
INSTALL_COMMAND = f"pipx install 'litellm[proxy]=={LITELLM_VERSION}'"


class SidecarError(Exception):
    """Base of every error this package raises: a client that catches it misses none (a bad profile too).

    Errors of bad input also derive from ``ValueError`` (``ProfileError``,
    ``RenderError``...), as callers and parsers catch them by that name.
    """


class SidecarStartError(SidecarError):
    """The sidecar did not reach ``running``; carries the error and the log tail."""

    def __init__(self, message: str, log_tail: Sequence[str] = ()) -> None:
        self.log_tail = tuple(log_tail)
        text = message
        if self.log_tail:
            text += "\nlast lines of the sidecar log:\n" + "\n".join("  " + line for line in self.log_tail)
        super().__init__(text)
        self.reason = message


class BinaryNotFoundError(SidecarError):
    """LiteLLM is not installed where it is looked for (by ``render``, or by a client's ``start``)."""

    def __init__(self, binary: str = "litellm") -> None:
        super().__init__(f"{binary} not found on PATH; install it with \"{INSTALL_COMMAND}\" (or pass --binary)")
        self.binary = binary
