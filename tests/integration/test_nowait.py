"""No wait either (issue 31): a crash never freezes the gateway for a LiteLLM start, with the stand-in LiteLLM.

The clients keep their connections alive, as the gateway's Go transport
does (``traffic.Pool``), and each test measures the longest a short request
took during the event against a quiet window of the same traffic in the same
test: the excess over the quiet window, as a share of the start the event
would otherwise make requests wait for (a ratio, not an absolute time).
"""

import http.client
import json
import os
import re
import signal
import socket
import threading
import time

import psutil
import pytest

from harness import MASTER_KEY, live_children, lives, poll, run_cli
from sidecar_plugin.names import health_socket_name
from test_memory_budget import HERE, light_binary, light_sidecar
from test_port import running, started
from traffic import Hammer, Traffic

pytestmark = pytest.mark.integration

FAST = "agentroute-fast"
START = 4.0  # seconds the replacement's start takes (the stand-in's start_delay): what a request must not wait
QUIET = 3.0  # seconds of traffic measured before the event


def kept_alive(sc):
    """Traffic through a pool of kept-alive connections, flowing; return it and the quiet window's longest wait."""
    traffic = Traffic(sc.port, MASTER_KEY, FAST, rate=10, keepalive=True).start()
    poll(lambda: traffic.short["ok"] >= 5, 15, what="traffic flowing")
    t0 = time.monotonic()
    time.sleep(QUIET)  # the quiet window the traffic runs through (a measurement, not a synchronisation)
    return traffic, traffic.longest_between(t0, time.monotonic())


def listener_lines(sc, offset=0):
    with open(os.path.join(sc.out, "listener.log"), errors="replace") as fh:
        fh.seek(offset)
        return [json.loads(line)["msg"] for line in fh.read().splitlines() if line.startswith("{")]


def judged(event, traffic, quiet, since, spared, more=100, hung_seen=None):
    """Stop the traffic once ``more`` answers came; nothing lost, and no request sent since ``since`` waited
    for what the event's design spares it (``spared`` seconds: a start, an import, a hang window).

    ``hung_seen``: when a worker was seen hung (its loop blocked). What it had accepted before its loop blocked
    is lost with it, by nature (nobody can answer from a blocked loop: at most the batch its last accept took);
    every request sent after it was seen hung must be answered, by its siblings. Waits are measured over the
    requests answered."""
    poll(lambda: traffic.short["ok"] >= more, 30, what="more answers")
    traffic.stop()
    if hung_seen is None:
        longest = traffic.longest_between(since)
    else:
        with traffic.lock:
            longest = max((took for sent, took, out in traffic.took if sent >= since and out == "ok"), default=0.0)
    print(f"\nROW | {event} | refused {traffic.short['refused']} | failed {traffic.short['failed']} | "
          f"longest wait {longest:.2f} s (quiet {quiet:.2f} s) | {traffic.summary()}")
    if hung_seen is None:
        assert traffic.lost == 0, traffic.summary()
    else:
        assert traffic.short["refused"] == 0, traffic.summary()
        assert traffic.short["pending"] == 0, traffic.summary()
        in_the_hung_worker = [f for f in traffic.failures() if f[0] < hung_seen]
        assert len(in_the_hung_worker) == traffic.short["failed"], (traffic.failures(), hung_seen)
        assert len(in_the_hung_worker) <= 2, traffic.failures()
    assert traffic.pool is None or traffic.pool.reused_failed == 0, traffic.summary()
    assert (longest - quiet) / spared < 0.5, traffic.summary()


def alive(pid):
    """Whether ``pid`` runs (a zombie, or one that exits while it is looked at, does not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_sigkill_orphans_serve_until_the_replacement_answers(make_sidecar):
    sc = make_sidecar(workers=2)
    st = started(sc)
    orphans = psutil.Process(st.pid).children()
    sc.set_mode({"start_delay": START})  # the replacement takes START s before it listens
    traffic, quiet = kept_alive(sc)
    offset = os.path.getsize(os.path.join(sc.out, "listener.log"))
    killed_at = time.monotonic()
    os.kill(st.pid, signal.SIGKILL)
    again = running(sc, other_than=st.pid)
    poll(lambda: not any(lives(p) for p in orphans), 30,
         what="the orphans drained")
    # the orphans served while the replacement started: no request waited for that start
    judged("SIGKILL of the main process", traffic, quiet, killed_at, START, more=80)
    # "draining" is said once it is true: after the new tree answered its health check (running)
    lines = listener_lines(sc, offset)
    served = [i for i, msg in enumerate(lines) if msg.endswith("-> running")]
    drained = [i for i, msg in enumerate(lines) if "draining orphaned process(es)" in msg]
    assert served, lines
    assert drained, lines
    assert drained[0] > served[0], lines
    assert again.pid != st.pid


class Workers:
    """Every worker pid the launcher's tree shows, sampled every 50 ms: the drains are the workers gone."""

    def __init__(self, sc):
        self.sc, self.seen, self.stop = sc, set(), threading.Event()
        threading.Thread(target=self._loop, daemon=True).start()

    def now(self):
        st = self.sc.state()
        try:
            return {c.pid for c in psutil.Process(st.pid).children()} if st and st.pid else set()
        except psutil.Error:
            return set()

    def _loop(self):
        while not self.stop.wait(0.05):
            self.seen |= self.now()

    def drained(self):
        return len(self.seen - self.now())


def replace_worker(sc, launcher, worker):
    """Ask the launcher over its control socket to replace one worker (as the memory budget does)."""
    prefix = health_socket_name(sc.program, os.path.join(sc.out, "litellm.yaml"))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect("\0%s/control/%d" % (prefix, launcher))
        s.sendall(b"replace %d\n" % worker)
        return s.recv(64).decode().strip()


def test_drains_never_reset_a_kept_alive_connection(make_sidecar, tmp_path):
    # the real launcher (light_app for LiteLLM's app); --memory-budget only for the control socket
    sc = light_sidecar(make_sidecar, tmp_path, {}, ["--memory-budget", str(1 << 20), "--max-requests", "400",
                                                    "--max-requests-jitter", "100"])
    sc.start_supervisord()
    st = running(sc)
    hammer = Hammer(sc.port, MASTER_KEY, FAST, clients=6).start()
    workers = Workers(sc)
    try:
        poll(lambda: hammer.outcomes["ok"] >= 50, 15, what="traffic flowing")
        for _ in range(4):  # rolling reloads: every worker drains
            before = workers.now()
            os.kill(st.pid, signal.SIGHUP)
            poll(lambda: not before & workers.now() and len(workers.now()) == 2, 30, what="the workers reloaded")
        for _ in range(2):  # a worker replaced on the listener's request (memory budget)
            victim = min(workers.now())
            assert replace_worker(sc, st.pid, victim) == "accepted"
            poll(lambda: victim not in workers.now() and len(workers.now()) == 2, 30, what="the worker replaced")
        os.kill(st.pid, signal.SIGKILL)  # the orphans serve, then drain
        st = running(sc, other_than=st.pid)
        res = sc.ctl("restart", sc.program, timeout=120)  # supervisord's stop drains the workers
        assert res.returncode == 0, res.stdout + res.stderr
        st = running(sc, other_than=st.pid)
        poll(lambda: workers.drained() >= 16, 60, what="more drains (max requests)")
    finally:
        hammer.stop()
        workers.stop.set()
    print(f"\nROW | drains under kept-alive connections | {workers.drained()} drains | {hammer.summary()}")
    assert hammer.pool.reused_failed == 0, hammer.summary()
    assert set(hammer.outcomes) == {"ok"}, hammer.summary()
    assert hammer.pool.reused > 1000, hammer.summary()  # the connections were kept alive and reused


def ask(conn):
    """One short request on the kept-alive ``conn``; its status and whether the server keeps the connection."""
    conn.request("POST", "/v1/messages", json.dumps({"model": FAST, "messages": []}),
                 {"x-api-key": MASTER_KEY, "content-type": "application/json"})
    resp = conn.getresponse()
    resp.read()
    return resp.status, (resp.getheader("connection") or "").lower() != "close"


def closed_by_server(conn):
    """Whether the server closed ``conn`` (its FIN waits to be read; no request is in flight on it)."""
    import select
    return bool(select.select([conn.sock], [], [], 0)[0]) and conn.sock.recv(1, socket.MSG_PEEK) == b""


def test_a_kept_alive_connection_outlives_uvicorns_keep_alive_but_not_a_drain(make_sidecar, tmp_path):
    """The worker, not the gateway, closing an idle connection is what crosses the gateway's next request on
    it: the launcher keeps idle connections longer than Go's transport does (90 s), and a drain still closes
    one within DRAIN_IDLE seconds, not the keep-alive's 95."""
    from sidecar_plugin.shell.litellm_launch.drain_connections import DRAIN_IDLE
    sc = light_sidecar(make_sidecar, tmp_path, {})
    sc.start_supervisord()
    st = running(sc)
    conn = http.client.HTTPConnection("127.0.0.1", sc.port, timeout=30)
    try:
        assert ask(conn) == (200, True)
        time.sleep(7)  # idle past uvicorn's default keep-alive (5 s): the stimulus, not a synchronisation
        assert not closed_by_server(conn), "the worker closed a connection idle 7 s"
        first = conn.sock.getsockname()
        assert ask(conn) == (200, True)
        assert conn.sock.getsockname() == first  # the same connection, reused
        os.kill(st.pid, signal.SIGHUP)  # a rolling reload: every worker drains, ours among them
        # within the new worker's start and DRAIN_IDLE, far below the keep-alive's 95 s
        poll(lambda: closed_by_server(conn), DRAIN_IDLE + 20, what="the draining worker closing the idle connection")
    finally:
        conn.close()


HANG = 4.0  # the launcher's hung-worker window in this test (SIDECAR_WORKER_HANG_WINDOW; 20 s by default)


def block_one_worker(port, how="hang_loop", seconds=300):
    """Send the request that blocks the event loop of the worker serving it (``hang_loop``: sleeping, lost with
    that worker; ``burn_loop``: computing); return its thread."""
    def send():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            conn.request("POST", "/v1/messages", json.dumps({"model": FAST, how: seconds, "messages": []}),
                         {"x-api-key": MASTER_KEY, "content-type": "application/json"})
            conn.getresponse().read()
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()
    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def light(make_sidecar, tmp_path, **env):
    return make_sidecar(workers=2, binary=light_binary(str(tmp_path)), env=dict(
        {"SIDECAR_APP": "light_app:app", "PYTHONPATH": HERE}, **env))


def test_a_hung_worker_is_replaced_alone_its_siblings_serving(make_sidecar, tmp_path):
    sc = light(make_sidecar, tmp_path, SIDECAR_WORKER_HANG_WINDOW=str(HANG))
    st = started(sc)
    traffic = Traffic(sc.port, MASTER_KEY, FAST, rate=10).start()  # a connection each: the siblings take them
    poll(lambda: traffic.short["ok"] >= 5, 15, what="traffic flowing")
    t0 = time.monotonic()
    time.sleep(QUIET)  # the quiet window the traffic runs through (a measurement, not a synchronisation)
    quiet = traffic.longest_between(t0, time.monotonic())
    hung_at = time.monotonic()
    block_one_worker(sc.port)
    line = poll(lambda: re.search(r"light app worker (\d+): hanging its loop", open(sc.log_file).read()), 15,
                what="a worker hangs")
    seen = time.monotonic()
    hung = int(line.group(1))
    poll(lambda: hung not in {c.pid for c in psutil.Process(st.pid).children()}
         and len(psutil.Process(st.pid).children()) == 2, HANG + 30, what="the hung worker replaced")
    judged("a worker hangs", traffic, quiet, hung_at, HANG, hung_seen=seen)  # nobody waited for the hung worker
    log = open(sc.log_file).read()
    assert f"worker {hung} has not run its event loop" in log, log[-2000:]
    assert "(hung)" in log, log[-2000:]
    now = sc.state()
    assert now.state.value == "running"
    assert now.pid == st.pid  # the launcher and the sibling stayed: no restart



def test_a_busy_worker_is_no_hung_worker(make_sidecar, tmp_path):
    # its loop computes for twice the hang window (a lazy import on a starved host): slow, never replaced
    sc = light(make_sidecar, tmp_path, SIDECAR_WORKER_HANG_WINDOW=str(HANG))
    st = started(sc)
    workers = {c.pid for c in psutil.Process(st.pid).children()}
    busy = block_one_worker(sc.port, "burn_loop", 2 * HANG)
    poll(lambda: "burning its loop" in open(sc.log_file).read(), 15, what="a worker computes")
    busy.join(2 * HANG + 60)  # its answer came: the burn is over
    assert not busy.is_alive()
    assert {c.pid for c in psutil.Process(st.pid).children()} == workers
    assert "(hung)" not in open(sc.log_file).read()


IMPORT = 4.0  # seconds the light app's import takes in the re-executed launcher (LiteLLM's takes 7 to 60)


def test_sigusr2_replaces_the_tree_in_place_the_old_workers_serving(make_sidecar, tmp_path):
    sc = light(make_sidecar, tmp_path)
    st = started(sc)
    old = {c.pid for c in psutil.Process(st.pid).children()}
    sc.set_mode({"import_seconds": IMPORT})  # the new image's import is slow: requests must not wait for it
    traffic, quiet = kept_alive(sc)
    sent_at = time.monotonic()
    sc.rpc().supervisor.signalProcess(sc.program, "USR2")  # what an operator can do: supervisorctl signal USR2
    poll(lambda: not old & {c.pid for c in psutil.Process(st.pid).children()}
         and len(psutil.Process(st.pid).children()) == 2, IMPORT + 60, what="the new workers alone")
    judged("SIGUSR2 (re-exec in place)", traffic, quiet, sent_at, IMPORT)  # the old workers served meanwhile
    now = sc.state()
    assert now.state.value == "running"
    assert now.pid == st.pid  # supervisord saw no exit, the listener no restart
    log = open(sc.log_file).read()
    assert "executing itself again" in log, log[-3000:]
    assert "the new workers serve: draining the previous ones" in log, log[-3000:]
    assert not any(alive(p) for p in old)


def test_sidecar_plugin_restart_replaces_the_tree_without_a_wait(make_sidecar, tmp_path):
    sc = light(make_sidecar, tmp_path)
    st = started(sc)
    old = {c.pid for c in psutil.Process(st.pid).children()}
    sc.set_mode({"import_seconds": IMPORT})
    traffic, quiet = kept_alive(sc)
    asked_at = time.monotonic()
    res = run_cli("restart", "--state-file", sc.state_file, "-s", "unix://" + sc.sock, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"running (pid {st.pid}, port {sc.port}); in place" in res.stdout, res.stdout
    from sidecar_plugin.shell.processes.inplace import workers

    new = workers(st.pid)  # the live ones: an old worker that has exited may wait a moment to be reaped (zombie)
    assert new
    assert not new & old  # it returned once the new workers served alone
    judged("sidecar-plugin restart", traffic, quiet, asked_at, IMPORT)


def test_restart_of_a_binary_that_cannot_reexec_is_a_stop_then_start(make_sidecar):
    sc = make_sidecar(workers=2)  # the stand-in runs as given: no launcher to re-execute
    st = started(sc)
    res = run_cli("restart", "--state-file", sc.state_file, "-s", "unix://" + sc.sock, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "stopped and started by supervisord" in res.stdout, res.stdout
    assert sc.state().pid != st.pid
    assert sc.state().state.value == "running"


def test_supervisorctl_sidecar_restart_replaces_the_tree_in_place(make_sidecar, tmp_path):
    sc = light(make_sidecar, tmp_path)
    st = started(sc)
    old = {c.pid for c in psutil.Process(st.pid).children()}
    res = sc.ctl("sidecar", "restart", timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "in place" in res.stdout, res.stdout + res.stderr
    from sidecar_plugin.shell.processes.inplace import workers

    new = workers(st.pid)  # the live ones: an old worker that has exited may wait a moment to be reaped (zombie)
    assert new
    assert not new & old
    assert sc.state().pid == st.pid


def test_a_worker_that_dies_while_pinged_is_respawned_at_once_not_after_the_pings_timeout(make_sidecar, tmp_path):
    """uvicorn's supervisor waits up to timeout_worker_healthcheck (60 s) for a worker's answer to its ping, on a
    pipe a dead worker never closes: a worker that died while pinged (one that reached its request limit, seen
    1 run in 20) left a one-worker tree serving nothing until the listener restarted it. Built here: the worker
    stopped (its ping unanswered), then killed; it is respawned within seconds, by the same launcher."""
    sc = light_sidecar(make_sidecar, tmp_path, {}, ["--max-requests", "100000"], workers=1)  # supervised, one worker
    sc.start_supervisord()
    st = running(sc)
    worker = psutil.Process(st.pid).children()[0]
    worker.suspend()
    time.sleep(1.5)  # the supervisor's loop (every 0.5 s) pings the stopped worker: the stimulus, not a sync
    worker.kill()
    poll(lambda: [c for c in live_children(st.pid) if c.pid != worker.pid], 15,
         what="a new worker (not after the ping's 60 s)")
    assert sc.state().pid == st.pid  # the launcher itself kept serving the port: no restart of the tree
