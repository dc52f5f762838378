"""What the sidecar's tree and its config file show between events, as inputs for the machine.

Sampled about once a second by the engine: whether the main process is
stopped, the tree's CPU time and workers (``shell.processes.tree_sample``), whether new
connections are accepted while health answers are late (serving is progress:
an overloaded sidecar is not hung), and a change of litellm.yaml on disk (a
rolling reload is followed by the workers' birth times). While it starts,
the log's size and who else holds its port tell progress from a dead end.
"""

from __future__ import annotations

import os
from typing import Any, Callable, List, Optional, Tuple

import psutil

from sidecar_plugin.core.listener import machine as m
from sidecar_plugin.names import State
from sidecar_plugin.shell.processes import tree_sample
from sidecar_plugin.shell.files.outfiles import file_version
from sidecar_plugin.shell.processes.port_holders import listeners
from sidecar_plugin.shell.processes.procs import describe, tree_pids

LATE_ANSWER = 2.0  # seconds without a health answer before connections are looked at (it costs a scan)
FOREIGN_EVERY = 1.0  # while it starts and nothing answers, how often the port's holders are looked up


class TreeObserver:
    """Turns samples of the tree and the config file into the inputs that changed."""

    def __init__(self, config_path: Optional[str], port: int, recent_ports: Callable[[], Any],
                 log_path: Optional[str] = None, host: str = "127.0.0.1", shared_port: bool = False) -> None:
        self.config_path = config_path
        self.port = port
        self.log_path = log_path
        self.host = host
        self.foreign_looked = 0.0
        # supervisord owns the listening socket ([fcgi-program]): it and an older tree's draining orphans
        # share the port, and a foreign holder keeps supervisord itself from creating it (the spawn fails)
        self.shared_port = shared_port
        self.recent_ports = recent_ports  # the prober's own client ports: its connections are not traffic
        self.config_mtime: Optional[float] = None
        self.sent_workers: Optional[tuple] = None
        self.last_conns: Optional[frozenset] = None

    def config_input(self) -> Optional[m.ConfigSeen]:
        """A ``ConfigSeen`` when litellm.yaml changed on disk since the last look."""
        if not self.config_path:
            return None
        try:
            mtime = os.stat(self.config_path).st_mtime
        except OSError:
            return None
        if mtime == self.config_mtime:
            return None
        self.config_mtime = mtime
        return m.ConfigSeen(file_version(self.config_path), mtime)

    def tree_inputs(self, model: m.Model, now: float) -> List[Any]:
        """``Workers`` when they changed, then ``TreeSigns``; nothing while the program is not live."""
        pid = model.pid
        if pid is None or model.supervisor_state not in ("STARTING", "RUNNING"):
            self.sent_workers = None
            return []
        seen = tree_sample.sample(pid)
        if seen is None:
            return []
        inputs: List[Any] = []
        if seen.workers != self.sent_workers:
            self.sent_workers = seen.workers
            inputs.append(m.Workers(seen.workers))
        accepted = None
        answered = model.answered_at
        if model.state is State.RUNNING and answered is not None and now - answered > LATE_ANSWER:
            # health answers are late: look whether it still accepts connections (only then: it costs)
            conns = tree_sample.connections(pid, self.port, self.recent_ports())
            if conns is not None:
                accepted = self.last_conns is not None and bool(conns - self.last_conns)
                self.last_conns = conns
        else:
            self.last_conns = None
        starting = model.state is State.STARTING
        return inputs + [m.TreeSigns(stopped=seen.stopped, cpu=seen.cpu, accepted=accepted,
                                     log_size=self._log_size() if starting else None,
                                     foreign=self._foreign(pid, now) if starting and not model.health_ok else None,
                                     elsewhere=self._elsewhere(pid, now) if starting and not model.health_ok
                                     else None)]

    def _log_size(self) -> Optional[int]:
        try:
            return os.stat(self.log_path).st_size if self.log_path else None
        except OSError:
            return None

    def _elsewhere(self, pid: int, now: float) -> Optional[Tuple[int, ...]]:
        """The TCP ports the tree listens on besides supervisord's socket (None: not looked, or not owned)."""
        if not self.shared_port or now - self.foreign_looked < FOREIGN_EVERY:
            return None
        self.foreign_looked = now
        tree = tree_pids(pid)
        try:
            found = psutil.net_connections(kind="tcp")
        except (psutil.Error, OSError):
            return None
        return tuple(sorted({c.laddr.port for c in found if c.status == psutil.CONN_LISTEN and c.pid in tree
                             and c.laddr and c.laddr.port != self.port}))

    def _foreign(self, pid: int, now: float) -> Optional[Tuple[str, ...]]:
        """Who else listens on the port, outside the tree (None: not looked now; it costs a scan of /proc).

        A listener whose pid is hidden (another user's, under ``hidepid``) is
        left out: it may be the sidecar's own, and a start is never failed on a guess.
        """
        if self.shared_port or now - self.foreign_looked < FOREIGN_EVERY:
            return None
        self.foreign_looked = now
        pids, _hidden = listeners(self.port, self.host)  # before the tree: a worker forked meanwhile is in it
        return tuple(describe(p) for p in sorted(pids - tree_pids(pid)))
