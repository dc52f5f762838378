"""The listener's timers fire however busy its inbox is.

Found by the chaos run's slow_boot fault: timers (the health timeout, a due
retry) were judged only when the inbox had been idle for a whole tick, and
while the sidecar starts the prober queues a result every 0.1 s (at once when
the port refuses), so a slow boot could stay ``starting`` for ever. This test
failed on the code before the fix.
"""

import os
import threading
import time

from harness import free_port, poll
from sidecar_plugin.core.listener import machine as m
from sidecar_plugin.core.options.listen_args import ListenerOptions
from sidecar_plugin.names import State
from sidecar_plugin.shell.listener.engine import Listener


class _Supervisor:
    def __init__(self):
        self.calls = []

    def getProcessInfo(self, name):
        return {"statename": "STOPPED", "pid": 0}

    def stopProcess(self, name, wait):
        self.calls.append("stopProcess")
        return True

    def startProcess(self, name, wait):
        self.calls.append("startProcess")
        return True


class _Rpc:
    def __init__(self):
        self.supervisor = _Supervisor()


def test_the_health_timeout_fires_while_probe_results_keep_arriving(tmp_path):
    opts = ListenerOptions(program="p", port=free_port(), state_file=str(tmp_path / "state.json"),
                           log_file=str(tmp_path / "l.log"), config_path=str(tmp_path / "c.yaml"),
                           health_timeout=0.5)
    rpc = _Rpc()
    listener = Listener(opts, lambda: rpc)
    threading.Thread(target=listener._engine_loop, daemon=True).start()
    try:
        poll(lambda: listener.publisher.last_state is not None, 10, what="the listener's first write")
        listener.inbox.put(m.ProcEvent("STARTING", pid=os.getpid(), asked=True, at=time.time()))
        busy = threading.Event()

        def prober():  # a port that refuses: results as fast as they come
            while not busy.is_set():
                listener.inbox.put(m.Probe(ok=False, started_at=time.time(), detail="refused"))
                time.sleep(0.02)

        threading.Thread(target=prober, daemon=True).start()
        try:
            poll(lambda: listener.model.state is State.CRASHED, 10, what="the health timeout to fire")
        finally:
            busy.set()
        assert listener.model.error == "did not become healthy within 0.5 s"
        # the model changes before its actions are carried out: the stop follows
        poll(lambda: "stopProcess" in rpc.supervisor.calls, 10, what="the listener to stop it")
    finally:
        listener.stopped.set()
