"""What the listener knows (``Model``) and the knobs of its decisions (``Config``).

Frozen dataclasses, so a model compares as data in the tests; ``machine.step``
relates a model and an input (``core.listener.inputs``) to the next model and the
actions (``core.listener.actions``) the shell carries out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Tuple

from sidecar_plugin.core.listener.counters import Counters
from sidecar_plugin.core.options.table import MACHINE, copied, default, fields_of
from sidecar_plugin.core.listener.retry import Backoff
from sidecar_plugin.names import LIVE_STATES, State


@fields_of(MACHINE)
@dataclass(frozen=True)
class Config:
    """The knobs of the machine: the listener's options (``core.options.table``) and the machine's own."""

    # The health timeout is the outer bound of a start: a start is judged by progress first
    # (``core.listener.health``): one that makes none fails sooner.
    backoff: Backoff = Backoff()  # when the listener starts again a sidecar that is down for good
    identify_every: float = 5.0  # while running, how often a healthy answer's holder is checked
    # Hung means no progress, never slow: a starting sidecar is failed when its tree shows
    # no progress (no CPU, no log line, no new worker) for ``hang_window`` seconds; a running sidecar is hung only
    # when no probe got an answer for ``hang_window`` seconds (probes do not wait on each other and
    # each has its own deadline, so a slow answer still arrives and counts) ...
    # ... or, sooner where it is certain: its main process has been stopped (SIGSTOP,
    # a debugger) for ``stopped_grace`` seconds with no answer meanwhile, or nothing
    # answered for ``quiet_window`` seconds while its whole tree used no CPU at all.
    stopped_grace: float = 1.5
    quiet_window: float = 10.0
    # the listener's options the decisions read (core.options.table)
    health_timeout: float = default("--health-timeout")
    hang_window: float = default("--hang-window")
    failure_threshold: int = default("--failure-threshold")


def config_of(opts: Any) -> Config:
    """The machine's Config of a sidecar's ListenerOptions: its options of the machine, its retry schedule."""
    return Config(backoff=Backoff(opts.retry_delay, opts.retry_max_delay, opts.retry_reset_after),
                  **copied(opts, MACHINE))


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
    # The pid the watch last saw die: supervisord's events about it that arrive later are history.
    died_pid: Optional[int] = None
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
    # The listener's own retries (core.listener.retry): the current retry's number (0: none), when
    # it is due and its delay, and when the listener asked supervisord to start it.
    retry_attempt: int = 0
    retry_at: Optional[float] = None
    retry_delay: Optional[float] = None
    retry_asked_at: Optional[float] = None
    # Who answered on the port when it was not the sidecar's tree (core.listener.identity), and
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
    # Progress of a start (core.listener.health): when the tree last showed some (None: no CPU sample
    # yet, so only the health timeout judges it), the CPU seconds and log size it was judged
    # against, and since when a process outside the tree has held the port (None: nobody).
    progress_at: Optional[float] = None
    progress_cpu: Optional[float] = None
    log_size: Optional[int] = None
    foreign_at: Optional[float] = None
    # since when the starting tree has listened on other ports than supervisord's socket, and which
    elsewhere_at: Optional[float] = None
    elsewhere: Tuple[int, ...] = ()

    @property
    def probing(self) -> bool:
        """Whether health probes mean anything now."""
        return self.supervisor_state in LIVE_STATES and not self.stopping and self.halted is None
