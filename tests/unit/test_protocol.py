"""The event-listener protocol: every event acknowledged, whatever its payload."""

import io

from sidecar_plugin.core.listener import machine as m
from sidecar_plugin.core.listener.events import event_input, parse_event, parse_headers
from sidecar_plugin.shell.listener.protocol import protocol_loop


def frame(payload: bytes, eventname: str = "PROCESS_STATE_RUNNING") -> bytes:
    header = (f"ver:3.0 server:supervisor serial:1 pool:x poolserial:1 eventname:{eventname} "
              f"len:{len(payload)}\n").encode()
    return header + payload


def run_loop(data: bytes):
    seen = []
    out = io.StringIO()
    protocol_loop(io.BytesIO(data), out, lambda h, p: seen.append((h, p)))
    return out.getvalue(), seen


def test_each_event_gets_ready_and_ok():
    data = frame(b"processname:a groupname:a from_state:STARTING pid:5") + frame(b"", "TICK_5")
    out, seen = run_loop(data)
    assert out == "READY\nRESULT 2\nOKREADY\nRESULT 2\nOKREADY\n"
    assert len(seen) == 2


def test_non_ascii_payload_is_read_by_bytes():
    payload = "processname:a groupname:a\nd\u00e9j\u00e0 vu \u2603".encode()
    out, seen = run_loop(frame(payload) + frame(b"x", "TICK_5"))
    assert out.count("RESULT 2\nOK") == 2
    assert seen[1][1] == "x"


def test_garbage_headers_are_still_acknowledged():
    out, seen = run_loop(b"this is not a header\n" + b"len:zz\n" + frame(b"ok"))
    assert out.count("RESULT 2\nOK") == 3
    assert len(seen) == 3


def test_handler_exception_is_acknowledged():
    out = io.StringIO()

    def boom(h, p):
        raise RuntimeError("x")
    protocol_loop(io.BytesIO(frame(b"a") + frame(b"b")), out, boom)
    assert out.getvalue().count("RESULT 2\nOK") == 2


def test_truncated_payload_ends_loop_without_error():
    out, _ = run_loop(b"eventname:X len:100\nshort")
    assert out == "READY\n"


def test_parse_headers_tolerates_tokens_without_colon():
    assert parse_headers("a:1 junk b:2:3") == {"a": "1", "b": "2:3"}


def test_event_input_filters_other_programs_and_parses_fields():
    name, body = parse_event({"eventname": "PROCESS_STATE_EXITED"},
                             "processname:side groupname:side from_state:RUNNING expected:0 pid:77")
    assert event_input(name, body, "side", "side") == m.ProcEvent("EXITED", pid=77, expected=False,
                                                                 from_state="RUNNING")
    assert event_input(name, body, "other", "other") is None
    assert event_input("TICK_5", {}, "side", "side") is None
    assert event_input("PROCESS_STATE_RUNNING", {"processname": "side", "groupname": "g"}, "side", "side") is None
    assert event_input("PROCESS_STATE_RUNNING", {"processname": "side", "pid": "x"}, "side", "side").pid is None
