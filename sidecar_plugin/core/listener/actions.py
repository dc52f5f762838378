"""What the listener does: the actions ``machine.step`` returns for the shell to carry out.

Frozen dataclasses, so the tests compare the actions a decision asks for as
data; the shell (``shell.listener.engine``) is the only place they touch the world.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Tuple, Union

from sidecar_plugin.core.listener.model import Model


@dataclass(frozen=True)
class Write:
    """Write the state file (and a history line when the state changed)."""


@dataclass(frozen=True)
class CaptureLogTail:
    """Read the last lines of the sidecar log (redacted) into ``log_tail``."""


@dataclass(frozen=True)
class Watch:
    """Watch ``pid`` for exit and track its process tree."""

    pid: int


@dataclass(frozen=True)
class Reap:
    """Kill what survives of the tracked tree, check the port, feed back Reaped.

    ``before``: when the exit happened; anything born after it is the new
    sidecar (supervisord may have restarted it already) and is spared, as is
    ``spare`` (the pid the model knows supervisord runs now) and its tree.
    """

    before: float
    spare: Optional[int] = None


@dataclass(frozen=True)
class Ask:
    """Ask supervisord for the program's state and pid, and feed ``inp`` back with the answer."""

    inp: Any


@dataclass(frozen=True)
class Identify:
    """Look up who listens on the port and feed ``probe`` back with ``own`` and ``holder`` filled."""

    probe: Any


@dataclass(frozen=True)
class Query:
    """Ask supervisord for the program's state and pid; feed back Observed."""


@dataclass(frozen=True)
class StopProgram:
    """Ask supervisord to stop the program (it never became healthy)."""


@dataclass(frozen=True)
class KillHung:
    """SIGKILL the whole tree: a hung process ignores SIGTERM; supervisord restarts it."""


@dataclass(frozen=True)
class StartProgram:
    """Ask supervisord to start the program (harmless if it already is)."""


Action = Union[Write, CaptureLogTail, Watch, Reap, StopProgram, KillHung, StartProgram, Ask, Query, Identify]
Result = Tuple[Model, List[Action]]


def watch(pid: Optional[int]) -> List[Action]:
    """Watch the tree of ``pid``, when supervisord gave one."""
    return [Watch(pid)] if pid is not None else []


def only(when: bool, action: Action) -> List[Action]:
    """``action``, when ``when``: a list of actions typed as such, to be added to."""
    return [action] if when else []
