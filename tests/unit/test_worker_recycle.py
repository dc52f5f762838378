"""The launcher in-process: its supervisor and a worker past its request limit (``spent``), its log lines.

``Replacing.keep_subprocess_alive`` is driven with stand-in workers (a ``spent`` flag, answering pings) and
a ``_replace`` that records its calls and fails or succeeds as told: no process is started.
"""

import io
import signal
import threading
import time
from types import SimpleNamespace

import pytest

worker_replace = pytest.importorskip("sidecar_plugin.shell.litellm_launch.worker_replace")
Replacing = worker_replace.Replacing


class Worker:
    def __init__(self, pid, spent):
        self.pid, self.spent = pid, SimpleNamespace(value=time.monotonic() if spent else 0.0)

    def is_alive(self, timeout=5):
        return True

    def hung(self, now, window):
        return False


def supervisor(workers, replaced_ok):
    """A Replacing whose loop state is set by hand (its constructor would install signal handlers)."""
    sup = Replacing.__new__(Replacing)
    sup.processes, sup.processes_num = list(workers), len(workers)
    sup.should_exit, sup.signal_queue, sup.retry_at = threading.Event(), [], {}
    sup.config = SimpleNamespace(timeout_worker_healthcheck=60)
    sup.calls = []

    def replace(pid, why, grace=None):
        sup.calls.append(pid)
        return replaced_ok

    sup._replace = replace
    return sup


def test_a_spent_worker_is_replaced():
    sup = supervisor([Worker(11, spent=True), Worker(12, spent=False)], replaced_ok=True)
    sup.keep_subprocess_alive()
    assert sup.calls == [11]


def test_a_failed_replacement_waits_before_it_is_tried_again_and_the_wait_doubles():
    sup = supervisor([Worker(11, spent=True)], replaced_ok=False)
    sup.keep_subprocess_alive()
    sup.keep_subprocess_alive()  # the next turn, half a second later in the launcher: not tried again yet
    assert sup.calls == [11]
    assert sup.retry_at[11][1] == worker_replace.RECYCLE_RETRY
    sup.retry_at[11] = (time.monotonic() - 1, sup.retry_at[11][1])  # its wait is over
    sup.keep_subprocess_alive()
    assert sup.calls == [11, 11]
    assert sup.retry_at[11][1] == 2 * worker_replace.RECYCLE_RETRY


def test_one_failed_start_per_turn():
    sup = supervisor([Worker(11, spent=True), Worker(12, spent=True)], replaced_ok=False)
    sup.keep_subprocess_alive()
    assert sup.calls == [11]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_no_replacement_starts_once_a_stop_waits_in_the_queue(sig):
    sup = supervisor([Worker(11, spent=True)], replaced_ok=True)
    sup.signal_queue.append(sig)
    sup.keep_subprocess_alive()
    assert sup.calls == []


class Writes(io.RawIOBase):
    """A raw stream that records each write it is given (what would be one write(2) each)."""

    def __init__(self):
        self.writes = []

    def writable(self):
        return True

    def write(self, b):
        self.writes.append(bytes(b))
        return len(b)


def test_the_launcher_writes_a_line_in_one_write_even_when_python_is_unbuffered():
    from sidecar_plugin.shell.litellm_launch.__main__ import whole_lines

    raw = Writes()
    stream = io.TextIOWrapper(raw, encoding="utf-8", write_through=True)  # what PYTHONUNBUFFERED gives stdout
    whole_lines(stream)
    print("sidecar launcher: pid 1 serves port 2 (fd 3) with 2 worker(s), LiteLLM 1.0.1", file=stream, flush=True)
    assert raw.writes == [b"sidecar launcher: pid 1 serves port 2 (fd 3) with 2 worker(s), LiteLLM 1.0.1\n"]
