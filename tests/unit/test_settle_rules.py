"""What apply waits for after converging, and the line it prints for a sidecar left down (as data)."""

import pytest

from sidecar_plugin.display import doing_line
from sidecar_plugin.shell.render.readiness import current, settled

NOW = 1_000_000.0


@pytest.mark.parametrize("doc, pid, expected", [
    ({"available": True, "is_stale": False, "listener_pid": 7}, 7, True),
    ({"available": True, "is_stale": False, "listener_pid": 6}, 7, False),  # the replaced listener wrote it
    ({"available": True, "is_stale": True, "listener_pid": 7}, 7, False),  # stale
    ({"available": False, "is_stale": False, "listener_pid": 7}, 7, False),  # no file
    ({"available": True, "is_stale": False, "listener_pid": 7}, None, False),  # no listener running
])
def test_only_the_current_listeners_fresh_word_counts(doc, pid, expected):
    assert current(doc, pid) is expected


@pytest.mark.parametrize("doc, expected", [
    ({"state": "running"}, True),
    ({"state": "stopped", "supervisor_state": "STOPPED"}, True),  # an operator's stop: left so
    ({"state": "starting", "supervisor_state": "RUNNING"}, False),
    ({"state": "crashed", "supervisor_state": "STOPPED", "retry": {"attempt": 1, "next_at": NOW + 9}}, False),
    ({"state": "crashed", "supervisor_state": "BACKOFF"}, False),  # supervisord still tries
    ({"state": "crashed", "supervisor_state": "FATAL", "retry": {"attempt": 0, "next_at": None}}, True),
])
def test_what_apply_waits_for(doc, expected):
    assert settled(doc) is expected


def test_the_line_of_a_crashed_sidecar_says_why_and_when_it_is_tried_again():
    doc = {"state": "crashed", "since": NOW - 5, "supervisor_state": "STOPPED",
           "error": "did not become healthy within 2 s\nmore", "retry": {"attempt": 1, "next_at": NOW + 65}}
    line = doing_line("agentroute-sidecar", doc, NOW)
    assert line.startswith("agentroute-sidecar: crashed for 5s; supervisord STOPPED; "
                           "did not become healthy within 2 s; next try at ")
    assert line.endswith("(in 1m05s)")
    assert "\n" not in line


@pytest.mark.parametrize("doc, words", [
    ({}, "state unknown"),
    ({"state": "crashed", "supervisor_state": "FATAL", "error": "exited"}, "no retry scheduled"),
    ({"state": "starting", "since": NOW - 3, "supervisor_state": "RUNNING"}, "starting for 3s; supervisord RUNNING"),
    ({"state": "stopped"}, "stopped (an operator's stop, or --no-autostart): apply leaves it stopped"),
    ({"state": "crashed", "error": "bad\x1b[31m red"}, "bad red"),
])
def test_every_line_names_the_state(doc, words):
    assert words in doing_line("p", doc, NOW)
