"""When to probe: a schedule of health probes, each on a thread of its own.

superlance's ``httpok`` probes inside its event handler, so a slow answer
delays everything behind it. Here probes never wait on each other: a probe
starts every interval (often while the sidecar starts, steadily while it
runs), each with an overall deadline, so a busy sidecar's late answers still
arrive and count, and the number running at once is bounded so a sidecar that
answers nothing costs a bounded number of threads and sockets.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from sidecar_plugin.core.listener import machine as m
from sidecar_plugin.core.options.listen_args import ListenerOptions
from sidecar_plugin.names import State
from sidecar_plugin.shell.listener.probe import Prober


def probe_loop(prober: Prober, opts: ListenerOptions, model: Callable[[], m.Model], put: Callable[[Any], None],
               plan_changed: threading.Event, stopped: threading.Event, log: Any) -> None:
    """Start a probe every interval until ``stopped``; each result is ``put`` as a ``Probe`` input.

    At most ``limit`` run at once (deadline / interval, plus one). ``plan_changed``
    wakes the loop when probing starts, stops or changes pace.
    """
    # A probe may take as long as the hang window: an overloaded sidecar's late answers keep
    # arriving (one a second, each late), so only a sidecar that answers nothing goes silent.
    deadline = min(opts.probe_timeout, opts.hang_window)
    limit = max(2, int(deadline / min(opts.probe_interval, opts.starting_probe_interval * 10)) + 1)
    slots = threading.BoundedSemaphore(limit)

    def one(pid: Any) -> None:
        try:
            result = prober.probe(deadline, pid)
            put(m.Probe(ok=result.ok, started_at=result.started_at, latency_ms=result.latency_ms,
                        detail=result.detail, peer=result.peer))
        except Exception as exc:  # a probe must never kill the prober
            log.warning("probe failed oddly: %s", exc)
        finally:
            slots.release()

    while not stopped.is_set():
        now_model = model()
        if not now_model.probing:
            plan_changed.wait(1.0)
            plan_changed.clear()
            continue
        starting = now_model.state is not State.RUNNING
        interval = opts.starting_probe_interval if starting else opts.probe_interval
        t0 = time.monotonic()
        if slots.acquire(timeout=interval):
            threading.Thread(target=one, args=(now_model.pid,), name="probe", daemon=True).start()
        left = interval - (time.monotonic() - t0)
        if left > 0 and plan_changed.wait(left):
            plan_changed.clear()
