"""What the CLI says as a process: a closed output, head closing it, no supervisord to reach, another
program on the port.

tests/unit/test_messages.py holds the log tail's and the start error's words, in-process.
"""

import os
import signal
import socket
import subprocess
import sys

import pytest

from harness import CLI, ROOT, poll, run_cli, write_state_doc
from sidecar_plugin.core.state.text import banner_line


def _state_doc(path, **fields):
    return write_state_doc(path, **{"error": "exited unexpectedly (pid 7)",
                                    "log_tail": [f"line {i} " + "x" * 300 for i in range(40)], **fields})


def _closed_pipe():
    """A pipe whose reader is already gone: every write to it fails with EPIPE."""
    r, w = os.pipe()
    os.close(r)
    return w


HOLDER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(1)
print("up", flush=True)
sys.stdin.read()
"""


def test_a_closed_output_is_no_error_for_any_command(tmp_path):
    state = _state_doc(tmp_path / "state.json")
    for args, code in ((["status", "--state-file", state], 3), (["status", "--json", "--state-file", state], 3),
                       (["endpoint", "--state-file", state], 0), (["--help"], 0), (["status", "--help"], 0)):
        w = _closed_pipe()
        try:
            res = subprocess.run(CLI + args, stdout=w, stderr=subprocess.PIPE, text=True, timeout=60, cwd=ROOT)
        finally:
            os.close(w)
        assert res.stderr == "", ((args, res.returncode, res.stderr))
        assert res.returncode == code, ((args, res.returncode, res.stderr))


def test_head_closing_the_output_is_no_error(tmp_path):
    state = _state_doc(tmp_path / "state.json")
    cli = " ".join(CLI)
    for args in ("status", "status --json"):
        res = subprocess.run(["sh", "-c", f"{cli} {args} --state-file {state} | head -1"], capture_output=True,
                             text=True, timeout=60, cwd=ROOT)
        assert res.stderr == "", ((args, res.stderr))
        assert len(res.stdout.splitlines()) == 1, ((args, res.stderr))


def test_cannot_reach_supervisord_says_how_to_point_at_it(tmp_path):
    gone = str(tmp_path / "nobody.sock")
    res = run_cli("stop", "--program", "agentroute-sidecar", "--state-file", _state_doc(tmp_path / "state.json"),
                  env={"SUPERVISOR_SERVER_URL": "unix://" + gone})
    assert res.returncode == 1, res.stderr
    assert len(res.stderr.splitlines()) == 1, res.stderr
    assert f"cannot reach supervisord at unix://{gone}" in res.stderr
    assert "-s URL" in res.stderr
    assert "$SUPERVISOR_SERVER_URL" in res.stderr

    # the demo's layout: a supervisor.sock beside the state file is named, as the -s to pass
    demo = tmp_path / "run"
    demo.mkdir()
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(demo / "supervisor.sock"))
        res = run_cli("start", "--state-file", _state_doc(demo / "state.json"),
                      env={"SUPERVISOR_SERVER_URL": "unix://" + gone})
    finally:
        sock.close()
    assert res.returncode == 1, res.stderr
    assert len(res.stderr.splitlines()) == 1, res.stderr
    assert f"-s unix://{demo / 'supervisor.sock'}" in res.stderr, res.stderr


@pytest.mark.integration
def test_start_beside_another_program_on_the_port_names_it(make_sidecar):
    # supervisord holds the sidecar's port from its start on ([fcgi-program]): the other program came first
    sc = make_sidecar(render_args=["--no-autostart", "--retry-delay", "60"])
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(sc.port)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert holder.stdout.readline().strip() == b"up"
        sc.start_supervisord(wait_state="stopped")
        res = run_cli("start", "--state-file", sc.state_file, "-s", "unix://" + sc.sock, "--timeout", "60",
                      timeout=90)
        first = res.stderr.splitlines()[0] if res.stderr else ""
        assert res.returncode == 1, res.stderr
        assert f"pid {holder.pid} " in first, res.stderr
        assert not any(banner_line(line) for line in res.stderr.splitlines()[1:])
        poll(lambda: f"pid {holder.pid}" in (sc.state().error or ""), 10, what="the state naming the holder")
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait(10)
