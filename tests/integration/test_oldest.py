"""The lowest versions setup.cfg admits, and a supervisor whose private code differs.

setup.cfg's lower bounds are the versions of ``tests/support/oldest-requirements.txt``
(Debian 12's: psutil 5.9.4, supervisor 4.2.5, PyYAML 6.0, requests 2.28.1):
``make test`` runs every test marked ``oldest`` on them too, in ``.venv-oldest``.
The marked tests use each dependency the way the package does, in about three
minutes on a busy host: supervisord holding the socket through a SIGKILL of
LiteLLM, an apply that re-creates the group, ``update`` and ``reload``
(tests/integration/test_port.py: the private code ``socket_holder`` replaces); the listener's psutil
signs through a SIGSTOP hang and an orphans' reap (tests/integration/test_listener_integration.py);
render, the client module, the CLI and the ctl plugin (tests/integration/test_control.py);
the gateway's URL, key and request (tests/integration/test_endpoint_served.py: requests, PyYAML); and
here, hang detection while health answers are late, where the listener scans the
tree's connections (psutil's API that moved in 6.0), judged with no error line
in the listener's log, and the shape check of supervisor's private code.
"""

import collections
import configparser
import json
import os
import re
import signal
import threading
import time

import pytest

from harness import FAKE_LITELLM, MASTER_KEY, ROOT, argv, live_children, lives, poll
from traffic import one_request

from sidecar_plugin.shell.supervisord import socket_holder

pytestmark = pytest.mark.oldest

FAST = "agentroute-fast"


def pins():
    with open(os.path.join(ROOT, "tests", "support", "oldest-requirements.txt")) as fh:
        return dict(re.match(r"([\w.-]+)==([\w.]+)$", line.strip()).groups() for line in fh if "==" in line)


def test_setup_cfg_lower_bounds_are_the_versions_the_oldest_tier_runs():
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    bounds = {}
    for line in cfg["options"]["install_requires"].split():
        name, low = re.match(r"([\w.-]+)>=([\w.]+)", line).groups()
        bounds[name] = low
    assert bounds == pins()
    assert "supervisor>=4.2.5,<4.4" in cfg["options"]["install_requires"]  # its private code: see socket_holder.py


def errors(sc):
    """The listener's log lines at level error or with a traceback (its log is JSON, one line each)."""
    bad = []
    with open(os.path.join(sc.out, "listener.log"), errors="replace") as fh:
        for line in fh:
            try:
                doc = json.loads(line)
            except ValueError:
                bad.append(line)  # a traceback or anything else the JSON formatter did not write
                continue
            if doc.get("level") in ("error", "critical") or "exc" in doc:
                bad.append(line)
    return bad


def workers(pid):
    return [w for w in live_children(pid) if FAKE_LITELLM in " ".join(argv(w))]


@pytest.mark.integration
def test_health_answers_later_than_the_window_while_it_serves_is_busy_not_hung(make_sidecar):
    # each health answer takes 9 s, past the 6 s hang window: only the connections it keeps
    # accepting (psutil's scan of the tree) tell it is busy; under psutil 5.9.4 that scan failed
    sc = make_sidecar(workers=2, render_args=["--hang-window", "6"], mode={"slow_health": 9, "slow_health_after": 8})
    sc.start_supervisord()
    first = sc.state()
    # a gateway's requests last: each stream holds its connection over the listener's 1 s samples
    done, outcomes = threading.Event(), collections.Counter()

    def streams():
        while not done.is_set():
            outcomes[one_request(sc.port, MASTER_KEY, FAST, stream_seconds=1.5, timeout=60)] += 1
    clients = [threading.Thread(target=streams, daemon=True) for _ in range(2)]
    for c in clients:
        c.start()
    try:
        poll(lambda: poll(sc.state, 5).health.consecutive_failures >= 1, 30, what="a late health answer")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # the observation window itself is the assertion
            now = poll(sc.state, 5, what="the state file")
            assert now.state.value == "running", now.error
            assert now.pid == first.pid, now.error
            time.sleep(0.5)
    finally:
        done.set()
        for c in clients:
            c.join(60)
    assert outcomes["ok"] > 10, outcomes
    assert set(outcomes) == {"ok"}, outcomes
    assert all(h["state"] != "crashed" for h in sc.history())
    assert errors(sc) == []


@pytest.mark.integration
def test_stopped_workers_are_hung_and_replaced_with_no_error_line(make_sidecar):
    sc = make_sidecar(workers=2, render_args=["--hang-window", "6"])
    sc.start_supervisord()
    st = sc.state()
    stopped = poll(lambda: (lambda ws: ws if len(ws) == 2 else None)(workers(st.pid)), 10, what="2 workers")
    for w in stopped:  # the main process runs on: no SIGSTOP of it to see, only answers that stop
        w.send_signal(signal.SIGSTOP)
    crashed = sc.wait_state("crashed", 40)
    assert "stopped answering" in crashed.error, crashed.error
    again = sc.wait_state("running", 30, pred=lambda s: s.pid not in (None, st.pid))
    assert again.pid != st.pid
    assert not any(lives(w) for w in stopped)
    assert errors(sc) == []


# ---- a supervisor whose private code differs ------------------------------------------------------------

def test_the_supervisor_installed_has_the_shape_held_replaces():
    from sidecar_plugin.shell.supervisord import shape

    assert socket_holder.PROBLEM is None  # before socket_holder replaced anything
    assert socket_holder.shape_problem() is None
    assert shape.problem() is None  # and after: its own code counts


@pytest.mark.parametrize("breakage, said", [
    (lambda mp, sm, pr, op: mp.delattr(sm.SocketManager, "_prepare_socket"), "has no method _prepare_socket"),
    (lambda mp, sm, pr, op: mp.setattr(sm.SocketManager, "_prepare_socket", lambda self, backlog: None),
     "_prepare_socket takes other arguments"),
    (lambda mp, sm, pr, op: mp.setattr(sm.SocketManager, "_close", lambda self: self.sock.close()),
     "_close no longer uses socket, prepared"),
    (lambda mp, sm, pr, op: mp.delattr(op.ServerOptions, "cleanup_fds"), "ServerOptions has no method cleanup_fds"),
    (lambda mp, sm, pr, op: mp.setattr(pr, "SocketManager", type("Other", (), {})), "replaced by another plugin"),
    (lambda mp, sm, pr, op: mp.setattr(pr.FastCGIProcessGroup, "__init__", lambda self, config, **kw: None),
     "FastCGIProcessGroup no longer makes its socket_manager from process.SocketManager"),
    (lambda mp, sm, pr, op: mp.delattr(sm, "SocketManager"), "has no class SocketManager"),
])
def test_each_difference_of_shape_is_named(monkeypatch, breakage, said):
    from supervisor import options, process, socket_manager

    breakage(monkeypatch, socket_manager, process, options)
    problem = socket_holder.shape_problem()
    assert problem is not None
    assert said in problem
    assert "\n" not in problem
    assert problem.startswith(f"supervisor {options.VERSION}")


def test_a_group_whose_socket_is_not_held_says_why():
    from types import SimpleNamespace

    supervisord = SimpleNamespace(process_groups={"fleet": SimpleNamespace(config=None)})
    assert socket_holder.port_state(supervisord, "gone") == (False, "supervisord has no group gone: apply the sidecar")
    ok, note = socket_holder.port_state(supervisord, "fleet")
    assert not ok
    assert "LiteLLM binds the port itself" in note


# Loaded by supervisord's interpreter before anything of the plugin: a supervisor whose socket
# manager prepares its socket under another name.
RENAMED = """from supervisor import socket_manager
socket_manager.SocketManager.prepare_socket = socket_manager.SocketManager._prepare_socket
del socket_manager.SocketManager._prepare_socket
socket_manager.SocketManager.__init__.__code__ = socket_manager.SocketManager.__init__.__code__.replace(
    co_names=tuple("prepare_socket" if n == "_prepare_socket" else n
                   for n in socket_manager.SocketManager.__init__.__code__.co_names))
"""


@pytest.mark.integration
def test_a_supervisor_of_another_shape_runs_the_sidecar_unheld_and_says_so(make_sidecar, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(RENAMED)
    sc = make_sidecar(workers=2, env={"PYTHONPATH": str(site)})
    sc.start_supervisord(wait_state="running", timeout=30)
    log = open(os.path.join(sc.dir, "supervisord.log")).read()
    said = [line for line in log.splitlines() if "sidecar: not holding the listening sockets" in line]
    assert len(said) == 1, log
    assert "SocketManager has no method _prepare_socket" in said[0], log
    assert "Traceback" not in log, log
    hold = sc.rpc().sidecar.getPortHold(sc.program)
    assert hold["port_held"] is False, hold
    assert "has no method _prepare_socket" in hold["port_note"], hold
    # supervisord's plain behaviour: the socket closes with the process, and the next one binds it again
    st = sc.state()
    res = sc.ctl("restart", sc.program, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    sc.wait_state("running", 30, pred=lambda s: s.pid not in (None, st.pid))
    assert sc.health_ok()
    assert sc._rpc_up()


@pytest.mark.integration
def test_the_plugin_says_the_port_is_held(make_sidecar):
    sc = make_sidecar()
    sc.start_supervisord()
    assert sc.rpc().sidecar.getPortHold(sc.program) == {"port_held": True, "port_note": ""}
