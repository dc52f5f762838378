"""The state file reader, writer and history: atomic, bounded, never a traceback."""

import json
import os
import stat
import time

import pytest

from sidecar_plugin.client import State, StateUnavailable, effective_state, read_state
from sidecar_plugin.core.state.schema import StateMissing
from sidecar_plugin.shell.files.statefile import (
    LockHeld, append_history, lock_state_file, read_history, write_state,
)


def doc(**over):
    now = time.time()
    d = {"schema": 1, "program": "p", "state": "running", "since": now - 5, "updated_at": now,
         "heartbeat_at": now, "pid": 5, "port": 4000, "supervisor_state": "RUNNING",
         "health": {"ok": True, "checked_at": now, "latency_ms": 1.0, "consecutive_failures": 0},
         "error": None, "log_tail": [], "listener_pid": 9}
    d.update(over)
    return d


def test_roundtrip_mode_and_fields(tmp_path):
    path = str(tmp_path / "state.json")
    write_state(path, doc())
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    st = read_state(path)
    assert st.state is State.RUNNING
    assert st.state == "running"
    assert st.pid == 5
    assert not st.is_stale
    assert st.health.ok is True
    assert st.port == 4000
    assert st.is_running
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_stale_is_never_running(tmp_path):
    path = str(tmp_path / "state.json")
    old = time.time() - 20
    write_state(path, doc(heartbeat_at=old, updated_at=old))
    st = read_state(path)
    assert st.is_stale
    assert not st.is_running
    assert effective_state(path) is State.CRASHED


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b"\xff\xfe", b'{"schema": 2}',
                                     json.dumps(doc(state="dancing")).encode(),
                                     json.dumps(doc(pid="x")).encode(),
                                     json.dumps(doc(since=True)).encode()],
                         ids=["empty", "cut", "a list", "not utf-8", "schema 2", "an unknown state", "a pid not a number",
                              "since not a time"])  # fixed: pytest-xdist's workers must collect the same ids
def test_corrupt_is_state_unavailable_and_reads_crashed(tmp_path, content):
    path = tmp_path / "state.json"
    path.write_bytes(content)
    with pytest.raises(StateUnavailable):
        read_state(str(path))
    assert effective_state(str(path)) is State.CRASHED


def test_missing_is_stopped(tmp_path):
    path = str(tmp_path / "none.json")
    with pytest.raises(StateMissing):
        read_state(path)
    assert effective_state(path) is State.STOPPED


def test_history_is_bounded_and_ordered(tmp_path):
    state_file = str(tmp_path / "state.json")
    for i in range(400):
        append_history(state_file, {"n": i, "pad": "x" * 100}, max_bytes=4096, backups=2)
    total = sum(os.path.getsize(tmp_path / n) for n in os.listdir(tmp_path) if n.startswith("history"))
    assert total <= 3 * 4096
    ns = [e["n"] for e in read_history(state_file)]
    assert ns == sorted(ns)
    assert ns[-1] == 399


def test_second_lock_is_refused(tmp_path):
    state_file = str(tmp_path / "state.json")
    fd = lock_state_file(state_file)
    try:
        with pytest.raises(LockHeld, match=str(os.getpid())):
            lock_state_file(state_file)
    finally:
        os.close(fd)
    os.close(lock_state_file(state_file))


def test_log_tail_leaves_out_the_listeners_own_probes(tmp_path):
    from sidecar_plugin.shell.listener.redact import tail_lines

    log = tmp_path / "litellm.log"
    lines = ["fatal: cannot load config"] + ['INFO: 127.0.0.1 - "GET /health/liveliness HTTP/1.1" 200 OK'] * 50
    log.write_text("\n".join(["started"] + lines[:1] + lines[1:]) + "\n")
    assert tail_lines(str(log), 5, skip="/health/liveliness") == ["started", "fatal: cannot load config"]
    assert tail_lines(str(log), 2)[-1].endswith("200 OK")


@pytest.mark.parametrize("beat", [float("nan"), float("inf"), "future"])
def test_a_heartbeat_that_proves_nothing_is_never_running(tmp_path, beat):
    path = str(tmp_path / "state.json")
    with open(path, "w") as fh:  # json writes NaN/Infinity, as a hand-made or corrupted file could hold
        json.dump(doc(heartbeat_at=time.time() + 3600 if beat == "future" else beat), fh)
    assert effective_state(path) is State.CRASHED
    try:
        assert read_state(path).is_running is False
    except StateUnavailable:
        pass


def test_a_state_file_far_larger_than_the_listener_writes_is_unavailable(tmp_path):
    path = str(tmp_path / "state.json")
    write_state(path, doc(padding="x" * (200 * 1024)))
    with pytest.raises(StateUnavailable):
        read_state(path)
    assert effective_state(path) is State.CRASHED


class _Log:
    def __init__(self):
        self.lines = []

    def warning(self, msg, *args):
        self.lines.append(msg % args)

    error = info = warning


def test_a_state_change_reaches_the_history_before_the_state_file(tmp_path):
    """Whenever the state file says a state, its history line is there already.

    A fresh-clone run read ``running`` from state.json and ``starting`` last in history.jsonl: the file was
    written first. Shown here by a state file that cannot be written (a folder in its place): the history has
    the change all the same, which it could not if the state file came first.
    """
    from sidecar_plugin.names import State
    from sidecar_plugin.shell.listener.publish import Publisher

    state_file = str(tmp_path / "state.json")
    os.mkdir(state_file)
    log = _Log()
    pub = Publisher(state_file, None, log)
    pub.publish(doc(state="running"), State.RUNNING, 100.0)
    assert [e["state"] for e in read_history(state_file)] == ["running"]
    assert len(log.lines) == 1
    assert "cannot write" in log.lines[0]


def test_a_history_that_cannot_be_written_never_holds_the_state_file_back(tmp_path):
    from sidecar_plugin.names import State
    from sidecar_plugin.shell.listener.publish import Publisher

    state_file = str(tmp_path / "state.json")
    os.mkdir(str(tmp_path / "history.jsonl"))  # not a regular file: append_history refuses it
    log = _Log()
    pub = Publisher(state_file, None, log)
    pub.publish(doc(state="starting"), State.STARTING, 100.0)
    assert read_state(state_file).state is State.STARTING
    assert "cannot write" in log.lines[0]
    pub.publish(doc(state="running"), State.RUNNING, 101.0)
    assert read_state(state_file).state is State.RUNNING
