"""Count LiteLLM's traffic over all the launcher's workers: prometheus_client's multiprocess mode.

LiteLLM's CLI sets this mode up when it runs several workers; the launcher
does not run the CLI, so it does the same itself: the folder named in the
program's environment (rendered per sidecar) is emptied at the tree's start,
and each worker uvicorn's supervisor joins is marked dead, as prometheus_client
asks. Imports nothing of sidecar_plugin, and prometheus_client only once a
worker has left (LiteLLM's install may lack it: then nothing was counted).
"""

import os
from typing import Any, Callable, Optional

# prometheus_client's multiprocess mode: rendered in the program's environment (core.render.sections)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def fresh_folder(keep: bool = False) -> Optional[str]:
    """Empty the tree's Prometheus folder, before anything imports prometheus_client; return it (None: off).

    Each worker writes its samples to its own files there and LiteLLM's
    ``/metrics`` adds up every file it finds (``MultiProcessCollector``, chosen
    when the variable is set), so a request counts once whichever worker served
    it. An earlier tree's files would be added again: a new tree starts from
    zero, a counter reset, which Prometheus' ``rate()`` and ``increase()`` expect.
    A folder that cannot be used costs the aggregation, not the sidecar: each
    worker then counts alone (said in the log).
    """
    folder = os.environ.get(MULTIPROC_ENV)
    if not folder:
        return None
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        for entry in [] if keep else os.scandir(folder):  # keep: a re-exec in place, its old workers counting
            if entry.is_file(follow_symlinks=False) or entry.is_symlink():
                os.unlink(entry.path)
    except OSError as exc:
        del os.environ[MULTIPROC_ENV]
        print("sidecar launcher: %s %s cannot be used (%s): each worker's /metrics counts alone"
              % (MULTIPROC_ENV, folder, exc.strerror or exc), flush=True)
        return None
    return folder


def counted_over_workers() -> None:
    """Tell prometheus_client of every worker uvicorn's supervisor has joined (exited), as its docs ask.

    ``mark_process_dead`` drops only the dead worker's live gauges (requests in
    flight); its counters and histograms stay in the folder and keep counting
    in the sum, so a worker replaced (rolling reload, memory budget, max
    requests) or respawned takes no count with it. Every way a worker leaves
    uvicorn's ``Multiprocess`` (and ``worker_replace``) ends in
    ``Process.join``; another uvicorn without that shape keeps its own (the
    live gauges of a dead worker then linger; LiteLLM drops them at the next
    worker's start).
    """
    if not os.environ.get(MULTIPROC_ENV):
        return
    try:
        from uvicorn.supervisors.multiprocess import Process
    except ImportError:
        return
    if not (callable(getattr(Process, "join", None))
            and all(isinstance(getattr(Process, n, None), property) for n in ("pid", "exitcode"))):
        return

    def join(self: Any, _original: Callable[[Any], None] = Process.join) -> None:
        _original(self)
        pid = self.pid
        if pid is not None and self.exitcode is not None:
            try:
                from prometheus_client import multiprocess

                multiprocess.mark_process_dead(pid)
            except (ImportError, OSError):  # no prometheus_client: nothing was counted
                pass
    Process.join = join
