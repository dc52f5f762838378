"""Messages that finish the sentence (issue 22, item 5).

A start beside another program on the port names the holder; "cannot reach
supervisord" says how to point at it; log tails leave out LiteLLM's banner;
a pager or ``head`` closing the output is no error.
"""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from harness import CLI, ROOT, poll, run_cli, write_state_doc

from sidecar_plugin.core.state.text import banner_line
from sidecar_plugin.shell.listener.redact import tail_lines

# LiteLLM 1.106.2's start, as its log holds it (escapes included), then the reason it stopped.
BANNER = [
    "INFO:     Started server process [6107]",
    "INFO:     Waiting for application startup.",
    "",
    "   ██╗     ██╗████████╗███████╗██╗     ██╗     ███╗   ███╗",
    "   ██║     ██║╚══██╔══╝██╔════╝██║     ██║     ████╗ ████║",
    "   ███████╗██║   ██║   ███████╗███████╗███████╗██║ ╚═╝ ██║",
    "   ╚══════╝╚═╝   ╚═╝   ╚══════╝╚══════╝╚══════╝╚═╝     ╚═╝",
    "",
    "\x1b[1;37m#------------------------------------------------------------#\x1b[0m",
    "\x1b[1;37m#                                                            #\x1b[0m",
    "\x1b[1;37m#              'I don't like how this works...'               #\x1b[0m",
    "\x1b[1;37m#        https://github.com/BerriAI/litellm/issues/new        #\x1b[0m",
    "\x1b[1;37m#------------------------------------------------------------#\x1b[0m",
    " Thank you for using LiteLLM! - Krrish & Ishaan",
    "",
    "\x1b[1;31mGive Feedback / Get Help: https://github.com/BerriAI/litellm/issues/new\x1b[0m",
    "\x1b[32mLiteLLM: Proxy initialized with Config, Set models:\x1b[0m",
    "\x1b[32m    agentroute-fast\x1b[0m",
    "ERROR:    [Errno 98] error while attempting to bind on address ('127.0.0.1', 4000): address already in use",
]


def test_a_log_tail_leaves_out_litellms_banner(tmp_path):
    log = tmp_path / "litellm.log"
    log.write_text("\n".join(BANNER) + "\n", encoding="utf-8")
    assert tail_lines(str(log), 40) == [
        "INFO:     Started server process [6107]",
        "INFO:     Waiting for application startup.",
        "LiteLLM: Proxy initialized with Config, Set models:",
        "    agentroute-fast",
        BANNER[-1],
    ]
    assert tail_lines(str(log), 1) == [BANNER[-1]]  # the count is of lines that say something


def test_banner_lines_are_only_the_banners():
    kept = ["Traceback (most recent call last):", "  File \"x.py\", line 1", "# a comment", "#", "═ not only art",
            "ValueError: port # 4000 #bad", "Thank you", "INFO:     Application startup complete."]
    assert [line for line in kept if banner_line(line)] == []


def _state_doc(path, **fields):
    return write_state_doc(path, **{"error": "exited unexpectedly (pid 7)",
                                    "log_tail": [f"line {i} " + "x" * 300 for i in range(40)], **fields})


def _closed_pipe():
    """A pipe whose reader is already gone: every write to it fails with EPIPE."""
    r, w = os.pipe()
    os.close(r)
    return w


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


HOLDER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(1)
print("up", flush=True)
sys.stdin.read()
"""


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


def _crash(**fields):
    doc = {"state": "crashed", "since": time.time() + 1, "error": "exited unexpectedly (pid 5)", "port_free": None,
           "log_tail": ["ERROR: address already in use"]}
    doc.update(fields)
    return doc


def test_a_start_error_waits_for_the_reap_that_names_the_holder():
    from sidecar_plugin.errors import SidecarStartError
    from sidecar_plugin.shell.supervisord import control

    said = "; the port is held by another process (pid 9 nginx), so it cannot start"
    docs = iter([_crash(), _crash(), _crash(port_free=False, port_holder="pid 9 nginx",
                                          error="exited unexpectedly (pid 5)" + said)])
    with pytest.raises(SidecarStartError) as exc:
        control.wait_started(lambda: next(docs), time.time(), 10)
    assert exc.value.reason == "exited unexpectedly (pid 5)" + said
    assert exc.value.log_tail == ("ERROR: address already in use",)
    # a holder the error does not name yet is added
    with pytest.raises(SidecarStartError) as exc:
        control.wait_started(lambda: _crash(port_holder="pid 9 nginx"), time.time(), 10)
    assert exc.value.reason == "exited unexpectedly (pid 5); the port is held by pid 9 nginx, not by the sidecar"
    # a reap that never comes ends the wait all the same, soon
    began = time.monotonic()
    with pytest.raises(SidecarStartError) as exc:
        control.wait_started(lambda: _crash(), time.time(), 30)
    assert exc.value.reason == "exited unexpectedly (pid 5)"
    assert time.monotonic() - began < control.REAP_GRACE + 2
