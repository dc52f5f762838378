"""What the listener is told: supervisord's events, probes, exits, timers, what supervisord says.

Frozen dataclasses only, so inputs compare as data in the tests; each says
*when* it happened where that matters (``at``), since the listener may
process it later than it happened.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Tuple, Union

from sidecar_plugin.names import State


@dataclass(frozen=True)
class ProcEvent:
    """A PROCESS_STATE_* event of our program (``state`` without the prefix).

    ``at`` is when it was received (not when it was processed): what a reap
    kills must have been born before the exit happened. ``asked``: the shell
    has filled in what supervisord says now (a STARTING event carries no pid).
    """

    state: str
    pid: Optional[int] = None
    expected: Optional[bool] = None
    from_state: Optional[str] = None
    at: Optional[float] = None
    asked: bool = False


@dataclass(frozen=True)
class Probe:
    """One health probe; ``started_at`` lets late results of old probes be ignored."""

    ok: bool
    started_at: float
    latency_ms: Optional[float] = None
    detail: str = ""
    # Filled by the shell on ``Identify``: whether the process listening on the port is of
    # the sidecar's tree (None: not checked), and who it is when it is not.
    own: Optional[bool] = None
    holder: Optional[str] = None
    # The pid listening on the tree's private health socket probed (supervisord owns the port).
    peer: Optional[int] = None


@dataclass(frozen=True)
class Died:
    """The watched main pid exited; ``supervisor_state`` and ``supervisor_pid`` as supervisord saw them (once asked)."""

    pid: int
    supervisor_state: Optional[str] = None
    at: Optional[float] = None
    asked: bool = False
    supervisor_pid: Optional[int] = None


@dataclass(frozen=True)
class SupervisorTick:
    """supervisord sent a TICK: time to compare the model with what supervisord says."""


@dataclass(frozen=True)
class Observed:
    """What supervisord says of the program now (the answer to ``Query``)."""

    statename: Optional[str]
    pid: Optional[int]


@dataclass(frozen=True)
class ConfigLoaded:
    """The version of litellm.yaml on disk when the shell started watching ``pid``."""

    pid: int
    version: Optional[str]


@dataclass(frozen=True)
class TreeSigns:
    """What the sidecar's own process tree says (sampled about once a second while it runs).

    ``stopped``: its main process is stopped or traced (SIGSTOP, a debugger), so
    it cannot answer; ``cpu``: CPU seconds its whole tree has used so far.
    """

    stopped: bool
    cpu: Optional[float] = None
    # the tree accepted a new connection on the sidecar's port since the last sample (None: not
    # looked): a sidecar that accepts connections is serving, however late its health answers
    accepted: Optional[bool] = None
    # the sidecar log's size in bytes (None: not looked): a start that writes its log progresses
    log_size: Optional[int] = None
    # while it starts: who else listens on its port, outside its tree (None: not looked; (): nobody)
    foreign: Optional[Tuple[str, ...]] = None
    # while it starts on supervisord's socket: the other TCP ports its tree listens on (None: not looked):
    # a program that binds its own port (LiteLLM's CLI behind a wrapper) never serves supervisord's
    elsewhere: Optional[Tuple[int, ...]] = None


@dataclass(frozen=True)
class ConfigSeen:
    """litellm.yaml changed on disk: its version and modification time."""

    version: Optional[str]
    mtime: float


@dataclass(frozen=True)
class Workers:
    """Birth times (unix) of the uvicorn workers the main process runs now (none in one-process mode)."""

    born: Tuple[float, ...]


@dataclass(frozen=True)
class LogTail:
    """The last lines of the sidecar log (redacted), as asked by ``CaptureLogTail``."""

    lines: Tuple[str, ...]


@dataclass(frozen=True)
class Reaped:
    """Outcome of a reap: what was killed, who else still listens on the port, and whether anyone does."""

    killed: int = 0
    foreign_holders: Tuple[str, ...] = ()
    port_free: Optional[bool] = None


@dataclass(frozen=True)
class OperatorStop:
    """An operator stops the sidecar on purpose (``sidecar stop`` tells the listener first).

    A sidecar the listener is retrying is already down (FATAL or STOPPED):
    supervisord sends no event for a stop then, so the client says it itself.
    """

    at: Optional[float] = None


@dataclass(frozen=True)
class Tick:
    """Time passed; timers (the health timeout) are judged here."""


@dataclass(frozen=True)
class Recover:
    """The listener (re)started: what supervisord says and what the old file said."""

    supervisor_state: Optional[str]
    pid: Optional[int]
    prior_state: Optional[State] = None
    prior_since: Optional[float] = None
    prior_pid: Optional[int] = None
    prior_error: Optional[str] = None
    prior_log_tail: Tuple[str, ...] = ()
    prior_counters: Any = None
    prior_config_version: Optional[str] = None
    prior_retry: Any = None


Input = Union[ProcEvent, Probe, Died, Reaped, Tick, Recover, SupervisorTick, Observed, ConfigLoaded, LogTail,
              OperatorStop, TreeSigns, ConfigSeen, Workers]
