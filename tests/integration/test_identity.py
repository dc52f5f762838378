"""Health that proves identity: an answer counts only when the sidecar's own tree listens on the port."""

import os
import subprocess
import sys
import time
from dataclasses import replace

import psutil
import pytest

from sidecar_plugin.core.listener import machine as m
from sidecar_plugin.names import MARKER_ENV, State
from sidecar_plugin.shell.processes import identity
from sidecar_plugin.shell.processes.procs import born_at

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "support"))
from harness import Sessions, free_port, poll  # noqa: E402

CFG = m.Config(health_timeout=20.0, failure_threshold=3)


def step(model, inp, now):
    return m.step(model, inp, now, CFG)


def kinds(actions):
    return [type(a).__name__ for a in actions]


def starting(since=0.0):
    return m.Model(state=State.STARTING, since=since, pid=10, supervisor_state="RUNNING", starting_since=since)


# ---- the machine --------------------------------------------------------------------------------

def test_a_healthy_answer_is_identified_before_it_counts():
    probe = m.Probe(ok=True, started_at=1.0, latency_ms=2.0)
    model, acts = step(starting(), probe, 1.1)
    assert model == starting()
    assert acts == [m.Identify(probe)]


def test_a_foreign_answer_is_never_running_and_names_the_holder():
    model = starting()
    for t in (1.0, 2.0, 3.0, 4.0):
        model, acts = step(model, m.Probe(ok=True, started_at=t, own=False, holder="pid 99 python3"), t + 0.01)
        assert model.state is State.STARTING
        assert model.health_ok is False
    assert model.port_holder == "pid 99 python3"
    assert model.failures == 4
    model, acts = step(model, m.Tick(), 20.0)
    assert model.state is State.CRASHED
    assert "did not become healthy within 20 s" in model.error
    assert "pid 99 python3" in model.error


def test_the_own_answer_is_running_and_clears_the_holder():
    model = replace(starting(), port_holder="pid 99 python3")
    model, acts = step(model, m.Probe(ok=True, started_at=1.0, own=True), 1.1)
    assert model.state is State.RUNNING
    assert model.port_holder is None
    assert model.identified_at == 1.1


def test_while_running_the_holder_is_checked_every_few_seconds_only():
    model, _ = step(starting(), m.Probe(ok=True, started_at=1.0, own=True), 1.0)
    model, acts = step(model, m.Probe(ok=True, started_at=2.0), 2.0)
    assert acts == []
    assert model.state is State.RUNNING
    probe = m.Probe(ok=True, started_at=6.0)
    model, acts = step(model, probe, 6.0)
    assert acts == [m.Identify(probe)]


def test_a_foreign_holder_while_running_counts_as_failed_probes():
    model, _ = step(starting(), m.Probe(ok=True, started_at=1.0, own=True), 1.0)
    for t in (10.0, 11.0, 12.0):
        model, acts = step(model, m.Probe(ok=True, started_at=t, own=False, holder="pid 7 nc"), t)
        assert model.state is State.RUNNING
    # foreign answers are no answers: hung once none of its own came for the hang window (issue 14)
    model, acts = step(model, m.Probe(ok=True, started_at=22.0, own=False, holder="pid 7 nc"), 22.0)
    assert model.state is State.CRASHED
    assert "pid 7 nc" in model.error


def test_a_reap_that_finds_another_holder_says_so_and_a_free_port_forgets_it():
    model = replace(starting(), state=State.CRASHED, error="exited", supervisor_state="EXITED")
    model, _ = step(model, m.Reaped(foreign_holders=("pid 5 nginx",), port_free=False), 1.0)
    assert model.port_holder == "pid 5 nginx"
    assert "pid 5 nginx" in model.error
    model, _ = step(model, m.Reaped(port_free=True), 2.0)
    assert model.port_holder is None


def test_the_state_document_names_the_holder():
    from sidecar_plugin.core.options.listen_args import ListenerOptions
    from sidecar_plugin.core.state.schema import state_document

    model = replace(starting(), port_holder="pid 5 nginx")
    opts = ListenerOptions(program="p", port=1234, state_file="/x/state.json", log_file="/x/l.log")
    assert state_document(model, opts, 1.0, 1, [], None)["port_holder"] == "pid 5 nginx"


# ---- the shell: who listens on a real port --------------------------------------------------------

SERVER = ("import socket, sys, time; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1);"
          "s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); print('up', flush=True); time.sleep(120)")


@pytest.fixture
def server():
    sessions = Sessions()
    yield lambda port, env=None: sessions.start([sys.executable, "-c", SERVER, str(port)], env)
    sessions.cleanup()


def test_a_stranger_on_the_port_is_not_the_sidecar(server):
    port = free_port()
    stranger = server(port)
    own, holder = identity.owner(port, "127.0.0.1", None)
    assert own is False
    assert f"pid {stranger.pid}" in holder


def test_the_sidecar_itself_on_the_port_is_its_own(server):
    port = free_port()
    sidecar = server(port)
    assert identity.owner(port, "127.0.0.1", sidecar.pid) == (True, None)


def test_an_older_marked_process_is_an_orphan_not_the_new_sidecar(server):
    port = free_port()
    env = dict(os.environ, **{MARKER_ENV: "p@/cfg"})
    orphan = server(port, env=env)
    # the scenario: the orphan is older than the sidecar supervisord runs now
    poll(lambda: time.time() - born_at(psutil.Process(orphan.pid)) > 0.3, 5, what="an older orphan")
    new_root = server(free_port(), env=env)
    own, holder = identity.owner(port, "127.0.0.1", new_root.pid)
    assert own is False
    assert f"pid {orphan.pid}" in holder


# Two siblings forked back to back, again until the kernel gave both the same start tick
# (/proc/PID/stat's starttime, the clock every birth time is read from): the first listens on the
# port (the orphan), the second is the new sidecar. Prints "up", then "ORPHAN ROOT ATTEMPTS".
SAME_TICK = r"""
import os, signal, socket, sys, time
port = int(sys.argv[1])

def tick(pid):
    with open(f"/proc/{pid}/stat", "rb") as fh:
        stat = fh.read()
    return int(stat[stat.rindex(b")") + 2:].split()[19])

def orphan(ready):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port)); s.listen(); os.write(ready, b"r"); time.sleep(120); os._exit(0)

for attempt in range(1, 201):
    r, w = os.pipe()
    a = os.fork()
    if a == 0:
        orphan(w)
    b = os.fork()
    if b == 0:
        time.sleep(120); os._exit(0)
    if tick(a) == tick(b):
        os.read(r, 1)
        print("up", flush=True)
        print(a, b, attempt, flush=True)
        time.sleep(120)
        sys.exit(0)
    for pid in (a, b):
        os.kill(pid, signal.SIGKILL); os.waitpid(pid, 0)
    os.close(r); os.close(w)
print("up", flush=True)
print("no two forks in one tick in 200 tries", flush=True)
"""


def start_ticks(pid):
    with open(f"/proc/{pid}/stat", "rb") as fh:
        stat = fh.read()
    return int(stat[stat.rindex(b")") + 2:].split()[19])


def test_a_marked_worker_born_the_same_instant_as_the_new_sidecar_but_outside_its_tree_is_not_it():
    """Chaos found it: a worker respawned just before its parent was SIGKILLed is as young as the
    sidecar supervisord spawns next (to a clock tick); it held the port and read as ``running``."""
    port = free_port()
    sessions = Sessions()
    try:
        launcher = sessions.start([sys.executable, "-c", SAME_TICK, str(port)], dict(os.environ, **{MARKER_ENV: "p@/cfg"}))
        said = launcher.stdout.readline().decode().split()
        assert len(said) == 3, " ".join(said)
        orphan, new_root = int(said[0]), int(said[1])
        assert start_ticks(orphan) == start_ticks(new_root)  # born in the same tick: no clock tells them apart
        assert orphan not in psutil.Process(new_root).children(recursive=True)
        own, holder = identity.owner(port, "127.0.0.1", new_root)
        assert own is False
        assert f"pid {orphan}" in holder
    finally:
        sessions.cleanup()


def test_a_worker_of_the_sidecar_that_left_its_session_is_still_its_own():
    """setsid changes the session, not the parent: the worker is in the root's tree."""
    port = free_port()
    code = ("import os, socket, sys, time\n"
            "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            f"s.bind(('127.0.0.1', {port})); s.listen()\n"
            "if os.fork() == 0:\n    os.setsid(); time.sleep(120)\n"
            "s.close(); print('up', flush=True); time.sleep(120)\n")
    sessions = Sessions()
    workers = []
    try:
        root = sessions.start([sys.executable, "-c", code])
        workers += psutil.Process(root.pid).children()  # forked before "up"
        poll(lambda: os.getsid(workers[0].pid) != os.getsid(root.pid), 5, what="the worker in a session of its own")
        own, holder = identity.owner(port, "127.0.0.1", root.pid)
        assert (own, holder) == (True, None)
    finally:
        for worker in workers:
            worker.kill()
        sessions.cleanup()


def test_nobody_listening_is_not_an_answer_of_the_sidecar():
    own, holder = identity.owner(free_port(), "127.0.0.1", os.getpid())
    assert own is False
    assert "nobody" in holder


HIDEPID_CHECK = r"""
import json, os, socket, subprocess, sys, time
from sidecar_plugin.shell.processes import identity
from sidecar_plugin.shell.processes.procs import tree_pids
import psutil
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
code = ("import os, socket, time\n"
        f"s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', {port})); s.listen()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n    time.sleep(30); os._exit(0)\n"
        "print(pid, flush=True); time.sleep(30)\n")
root = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True)
try:
    worker = int(root.stdout.readline())
    try:
        psutil.Process(root.pid).children()
        hidden = False
    except (psutil.AccessDenied, PermissionError):
        hidden = True
    print(json.dumps({"hidden": hidden, "tree": sorted(tree_pids(root.pid)), "expected": sorted([root.pid, worker]),
                      "owner": identity.owner(port, "127.0.0.1", root.pid)}))
finally:
    os.killpg(root.pid, 9)
    root.wait()
"""


def test_on_a_host_hiding_other_users_processes_the_sidecars_own_answer_is_its_own(tmp_path):
    """--user on a /proc mounted hidepid=1: psutil cannot list children (it reads everyone's parent),
    so the root's tree was empty and the sidecar's own health answer read as foreign, forever."""
    import json
    import shutil
    import tempfile

    import sidecar_plugin

    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("setpriv"):
        pytest.skip("needs root, unshare and setpriv to mount a hidepid /proc in a namespace of its own")
    python = "/usr/bin/python3"
    if subprocess.run([python, "-c", "import psutil"], capture_output=True).returncode != 0:
        pytest.skip("no system python with psutil for an unprivileged user")
    area = tempfile.mkdtemp(prefix="sidecar-hidepid-")
    try:
        os.chmod(area, 0o755)
        shutil.copytree(os.path.dirname(sidecar_plugin.__file__), os.path.join(area, "sidecar_plugin"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        script = os.path.join(area, "check.py")
        with open(script, "w") as fh:
            fh.write(HIDEPID_CHECK)
        os.chmod(script, 0o644)
        inner = (f"mount -t proc -o hidepid=1 proc /proc && exec setpriv --reuid=65534 --regid=65534 --clear-groups "
                 f"env PYTHONPATH={area} {python} {script}")
        res = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", inner], capture_output=True,
                             text=True, timeout=60, cwd="/", start_new_session=True)
        if res.returncode != 0 and "mount" in res.stderr:
            pytest.skip(f"cannot mount a hidepid /proc here: {res.stderr.strip()[:200]}")
        assert res.returncode == 0, res.stderr
        seen = json.loads(res.stdout.strip().splitlines()[-1])
        assert seen["hidden"], "psutil could list the children: the mount did not hide other users' processes"
        assert seen["tree"] == seen["expected"]
        assert seen["owner"] == [True, None]
    finally:
        shutil.rmtree(area, ignore_errors=True)
