"""The state machine's vocabulary: what the listener knows, what it is told, what it does.

Frozen dataclasses only, so models, inputs and actions compare as data in the
tests. ``machine.step`` is the one function that relates them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Tuple, Union

from sidecar_plugin.core.counters import Counters
from sidecar_plugin.core.retry import Backoff
from sidecar_plugin.names import LIVE_STATES, State


@dataclass(frozen=True)
class Config:
    """The knobs of the machine (the listener's command-line options)."""

    health_timeout: float = 20.0
    failure_threshold: int = 3
    backoff: Backoff = Backoff()  # when the listener starts again a sidecar that is down for good
    identify_every: float = 5.0  # while running, how often a healthy answer's holder is checked
    # Hung means no progress, never slow: a running sidecar is hung only when no probe
    # got an answer for ``hang_window`` seconds (probes do not wait on each other and
    # each has its own deadline, so a slow answer still arrives and counts) ...
    hang_window: float = 20.0
    # ... or, sooner where it is certain: its main process has been stopped (SIGSTOP,
    # a debugger) for ``stopped_grace`` seconds with no answer meanwhile, or nothing
    # answered for ``quiet_window`` seconds while its whole tree used no CPU at all.
    stopped_grace: float = 1.5
    quiet_window: float = 10.0


@dataclass(frozen=True)
class Model:
    """What the listener knows; ``state`` and friends are what it publishes."""

    state: State = State.STOPPED
    since: float = 0.0
    pid: Optional[int] = None
    supervisor_state: Optional[str] = None
    health_ok: Optional[bool] = None
    checked_at: Optional[float] = None
    latency_ms: Optional[float] = None
    failures: int = 0
    error: Optional[str] = None
    log_tail: Tuple[str, ...] = ()
    starting_since: Optional[float] = None
    # True from supervisord's STOPPING on: exits are then on purpose.
    stopping: bool = False
    # Why the listener itself took the sidecar down ("timeout", "hung"), if it did:
    # the crash it recorded must not be overwritten by the stop that follows.
    halted: Optional[str] = None
    counters: Counters = Counters()
    # The version of litellm.yaml the live sidecar was started with, and the pid that
    # loaded it: LiteLLM reads its config only at start, so apply compares these.
    config_version: Optional[str] = None
    version_pid: Optional[int] = None
    # What the last TICK found supervisord disagreeing on (statename, pid): replayed
    # only when the next TICK finds the same, since events may still be on their way.
    mismatch: Optional[Tuple[Optional[str], Optional[int]]] = None
    # After the last reap: True when nothing but the sidecar's own tree listens on
    # the port (None: not checked yet). A stop is complete only with the port free.
    port_free: Optional[bool] = None
    # The listener's own retries (core.retry): the current retry's number (0: none), when
    # it is due and its delay, and when the listener asked supervisord to start it.
    retry_attempt: int = 0
    retry_at: Optional[float] = None
    retry_delay: Optional[float] = None
    retry_asked_at: Optional[float] = None
    # Who answered on the port when it was not the sidecar's tree (core.identity), and
    # when a healthy answer's holder was last checked.
    port_holder: Optional[str] = None
    identified_at: Optional[float] = None
    # Progress, for hang detection: when a probe last got a healthy answer; when the
    # main process was first seen stopped or traced (None: it is not); the tree's CPU
    # seconds as last sampled, and as sampled at the last answer.
    answered_at: Optional[float] = None
    stopped_at: Optional[float] = None
    cpu: Optional[float] = None
    cpu_base: Optional[Tuple[float, float]] = None  # (cpu seconds, when): at the last answer or first sample
    probe_detail: str = ""
    accepted_at: Optional[float] = None
    workers: Tuple[float, ...] = ()
    # litellm.yaml as last seen on disk: (version, mtime). A uvicorn worker born after
    # that mtime read that version (a SIGHUP replaces workers; the main pid stays).
    config_seen: Optional[Tuple[Optional[str], float]] = None

    @property
    def probing(self) -> bool:
        """Whether health probes mean anything now."""
        return self.supervisor_state in LIVE_STATES and not self.stopping and self.halted is None


# ---- inputs -----------------------------------------------------------------

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


@dataclass(frozen=True)
class Died:
    """The watched main pid exited; ``supervisor_state`` as supervisord saw it then (once asked)."""

    pid: int
    supervisor_state: Optional[str] = None
    at: Optional[float] = None
    asked: bool = False


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

# ---- actions ----------------------------------------------------------------


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
