"""Identity among real processes: a stranger, the sidecar itself, an orphan, a worker outside its tree or
session, nobody listening, a host hiding other users' processes.

tests/unit/test_identity.py holds the machine's rules for an answer, in-process.
"""

import os
import subprocess
import sys
import time

import psutil
import pytest

from harness import Sessions, free_port, poll
from sidecar_plugin.names import MARKER_ENV
from sidecar_plugin.shell.processes import port_holders
from sidecar_plugin.shell.processes.procs import born_at

# ---- the shell: who listens on a real port --------------------------------------------------------

SERVER = ("import socket, sys, time; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1);"
          "s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); print('up', flush=True); time.sleep(120)")


@pytest.fixture
def server():
    sessions = Sessions()
    yield lambda port, env=None: sessions.start([sys.executable, "-c", SERVER, str(port)], env)
    sessions.cleanup()



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



HIDEPID_CHECK = r"""
import json, os, socket, subprocess, sys, time
from sidecar_plugin.shell.processes import port_holders
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
                      "owner": port_holders.owner(port, "127.0.0.1", root.pid)}))
finally:
    os.killpg(root.pid, 9)
    root.wait()
"""


def test_a_stranger_on_the_port_is_not_the_sidecar(server):
    port = free_port()
    stranger = server(port)
    own, holder = port_holders.owner(port, "127.0.0.1", None)
    assert own is False
    assert f"pid {stranger.pid}" in holder


def test_the_sidecar_itself_on_the_port_is_its_own(server):
    port = free_port()
    sidecar = server(port)
    assert port_holders.owner(port, "127.0.0.1", sidecar.pid) == (True, None)


def test_an_older_marked_process_is_an_orphan_not_the_new_sidecar(server):
    port = free_port()
    env = dict(os.environ, **{MARKER_ENV: "p@/cfg"})
    orphan = server(port, env=env)
    # the scenario: the orphan is older than the sidecar supervisord runs now
    poll(lambda: time.time() - born_at(psutil.Process(orphan.pid)) > 0.3, 5, what="an older orphan")
    new_root = server(free_port(), env=env)
    own, holder = port_holders.owner(port, "127.0.0.1", new_root.pid)
    assert own is False
    assert f"pid {orphan.pid}" in holder


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
        own, holder = port_holders.owner(port, "127.0.0.1", new_root)
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
        own, holder = port_holders.owner(port, "127.0.0.1", root.pid)
        assert (own, holder) == (True, None)
    finally:
        for worker in workers:
            worker.kill()
        sessions.cleanup()


def test_nobody_listening_is_not_an_answer_of_the_sidecar():
    own, holder = port_holders.owner(free_port(), "127.0.0.1", os.getpid())
    assert own is False
    assert "nobody" in holder


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


# A root that starts a thread, whose thread forks a child (listed under the thread's task, not the main one's),
# and a child of the main thread that forks a grandchild. Prints "ROOT_CHILD THREAD_CHILD GRANDCHILD".
TREE = r"""
import os, sys, threading, time
def fork_sleeper(report):
    pid = os.fork()
    if pid == 0:
        if report is not None:
            grand = os.fork()
            if grand == 0:
                time.sleep(60); os._exit(0)
            os.write(report, (str(grand) + "\n").encode())
        time.sleep(60); os._exit(0)
    return pid
r, w = os.pipe()
child = fork_sleeper(w)
grand = int(os.read(r, 64).split()[0])
box = []
t = threading.Thread(target=lambda: box.append(fork_sleeper(None))); t.start(); t.join()
# the thread ended: its task is gone, its child was reparented to the main thread's task
keep = threading.Thread(target=lambda: (box.append(fork_sleeper(None)), time.sleep(60)), daemon=True); keep.start()
while len(box) < 2: time.sleep(0.01)
print(child, box[0], box[1], grand, flush=True)
time.sleep(60)
"""


@pytest.mark.oldest  # psutil 5.9.4 (Debian 12) too: the path every listener takes
def test_descendants_are_read_from_the_tree_alone_not_a_scan_of_every_process(monkeypatch):
    """The listener reads its tree several times a second: every descendant (a thread's children, a
    grandchild) is found, the same as psutil's scan of the host, without that scan (a host of thousands of
    processes made it the listener's CPU)."""
    from sidecar_plugin.shell.processes import procs
    root = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, start_new_session=True, text=True)
    try:
        child, thread_child, living_thread_child, grand = map(int, root.stdout.readline().split())
        main = psutil.Process(root.pid)
        expected_all = sorted(p.pid for p in main.children(recursive=True))
        expected_direct = sorted(p.pid for p in main.children())
        assert expected_all == sorted([child, thread_child, living_thread_child, grand])
        if not os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children"):
            pytest.skip("this kernel does not list each task's children (CONFIG_PROC_CHILDREN)")

        def no_scan(*_args, **_kwargs):
            raise AssertionError("descendants() read every process of the host")
        monkeypatch.setattr(psutil, "process_iter", no_scan)
        monkeypatch.setattr(psutil, "_ppid_map", no_scan)
        assert sorted(p.pid for p in procs.descendants(main)) == expected_all
        assert sorted(p.pid for p in procs.descendants(main, recursive=False)) == expected_direct
        assert procs.tree_pids(root.pid) == {root.pid, *expected_all}
    finally:
        os.killpg(root.pid, 9)
        root.wait()
