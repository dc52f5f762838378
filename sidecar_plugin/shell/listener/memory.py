"""Sample the memory of the sidecar's tree on its own schedule and carry out ``core.listener.budget``'s decisions.

PSS (``/proc/PID/smaps_rollup``), not RSS: the workers are forked from a
launcher that imported LiteLLM once and share its pages, so each worker's RSS
counts those shared pages in full (about 290 MB each, idle) while PSS charges
each process its share: what a worker would free if it went. Reading
smaps_rollup costs about 0.1 ms per process here (RSS from statm is ~20 us),
every 10 s by default: nothing next to the probes. Where smaps_rollup cannot
be read (another user's process without ptrace rights), RSS is shown and
says so (``measure``).

A replacement is asked of the launcher over the tree's private control
socket (``litellm_launch.worker_replace``), and only when the socket's
listener is the pid supervisord runs (``SO_PEERCRED``): the abstract name
could be taken by anyone.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import replace
from typing import Any, Dict, Optional, Tuple

import psutil

from sidecar_plugin.core.listener import budget as bg
from sidecar_plugin.names import State
from sidecar_plugin.shell.files.statefile import append_history
from sidecar_plugin.shell.processes.procs import descendants

MB = 1024.0 * 1024.0


def memory_mb(pid: int) -> Tuple[Optional[float], str]:
    """Return (MB, "pss") from smaps_rollup, else (MB, "rss"), else (None, "").

    A process without an address space any more (a worker exiting after its
    drain, a zombie not yet reaped) has no memory to count: None, never an RSS
    of 0 that would turn the whole sample into RSS. The RSS fallback is only
    for a kernel without smaps_rollup (before 4.14) or one that refuses it.
    """
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
            for line in fh.read(8192).splitlines():
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) / 1024.0, "pss"
        return None, ""  # read, but no mappings: the process is exiting
    except ProcessLookupError:
        return None, ""  # a zombie: its memory is gone
    except (OSError, ValueError, IndexError):
        pass
    try:
        rss = psutil.Process(pid).memory_info().rss
    except (psutil.Error, OSError):
        return None, ""
    return (rss / MB, "rss") if rss else (None, "")  # a zombie's RSS is 0


def sample_tree(pid: int) -> Tuple[Tuple[bg.Proc, ...], str]:
    """The main process and its direct children (uvicorn's workers), with their memory."""
    try:
        main = psutil.Process(pid)
        members = [(main, False)] + [(c, True) for c in descendants(main, recursive=False)]
    except psutil.Error:
        return (), ""
    procs, measures = [], set()
    for proc, worker in members:
        try:
            born = proc.create_time()
        except psutil.Error:
            continue
        mb, measure = memory_mb(proc.pid)
        if mb is not None:
            procs.append(bg.Proc(proc.pid, born, mb, worker))
            measures.add(measure)
    return tuple(procs), "rss" if "rss" in measures else "pss"


def _cmdline(pid: int) -> list:
    try:
        return psutil.Process(pid).cmdline()
    except psutil.Error:
        return []


def ask_replace(prefix: str, main_pid: int, worker: int, timeout: float = 5.0) -> str:
    """Ask the launcher ``main_pid`` to replace ``worker``; return its answer (or why there is none)."""
    if not prefix:
        return "no control socket (LiteLLM owns the port: its CLI cannot replace one worker)"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect("\0%s/control/%d" % (prefix, main_pid))
        peer = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
        if peer != main_pid:
            return f"the control socket is held by pid {peer}, not the sidecar's {main_pid}"
        sock.sendall(b"replace %d\n" % worker)
        return sock.recv(64).decode("ascii", "replace").strip() or "no answer"
    except OSError as exc:
        return f"no control socket ({exc.strerror or exc}): a --binary other than LiteLLM's, or an older render"
    finally:
        sock.close()


class MemoryKeeper:
    """Samples every ``every`` seconds while the sidecar runs; replaces, backs off and records as decided."""

    def __init__(self, cfg: bg.BudgetConfig, prefix: str, state_file: str, log: Any, prior: Any = None) -> None:
        self.cfg = cfg
        self.prefix = prefix
        self.state_file = state_file
        self.log = log
        self.budget = bg.restored(prior)
        self.measure = "pss"
        self.last = 0.0
        self.main: Optional[int] = None
        self.workers = 1  # as configured: the main process's --num_workers (a draining worker is one more)

    def tick(self, model: Any, now: float) -> bool:
        """Sample when due; return True when the state file should be written now."""
        if model.pid is None or model.state is not State.RUNNING:
            changed = bool(self.budget.procs) or self.budget.replacing is not None
            self.budget = replace(self.budget, procs=(), replacing=None)
            return changed
        if now - self.last < self.cfg.every:
            return False
        self.last = now
        # read each time: apply may replace the tree in place with another worker count (the same pid)
        self.main, self.workers = model.pid, bg.workers_of(_cmdline(model.pid))
        procs, self.measure = sample_tree(model.pid)
        cfg = replace(self.cfg, workers=self.workers)
        self.budget, actions = bg.on_sample(self.budget, procs, now, cfg)
        for action in actions:
            self._do(action, model, now, cfg)
        return True

    def _do(self, action: Any, model: Any, now: float, cfg: bg.BudgetConfig) -> None:
        if isinstance(action, bg.Note):
            fields = dict(action.fields)
            self.log.warning("%s: %s", action.event, ", ".join(f"{k} {v}" for k, v in fields.items()))
            try:
                append_history(self.state_file, {"at": now, "event": action.event, "state": model.state.value,
                                                 "measure": self.measure, **fields})
            except OSError as exc:
                self.log.warning("cannot write the history: %s", exc.strerror or exc)
        elif isinstance(action, bg.Replace):
            answer = ask_replace(self.prefix, model.pid, action.pid)
            self.log.info("asked the launcher to replace worker %d (%.0f MB, budget %.0f MB): %s",
                          action.pid, action.mb, action.budget_mb, answer)
            self.budget, more = bg.on_answer(self.budget, action.pid, answer, now, cfg)
            for extra in more:
                self._do(extra, model, now, cfg)

    def document(self) -> Dict[str, Any]:
        return bg.document(self.budget, self.cfg, self.measure)
