"""Messages that finish the sentence (issue 22, item 5).

Log tails leave out LiteLLM's banner; a start error waits for the reap that
names the holder. The CLI as a process (a start beside another program on the
port, "cannot reach supervisord", a pager or ``head`` closing the output):
tests/integration/test_messages_cli.py.
"""

import time

import pytest

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
