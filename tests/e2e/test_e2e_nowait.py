"""No wait either, with the real LiteLLM (issue 31): a SIGKILL of the main process freezes no request.

The orphaned workers serve until the replacement answers its health check,
then drain; the clients keep their connections alive as the gateway's Go
transport does. The longest a short request took after the kill is measured
against a quiet window of the same traffic (a ratio of the replacement's
start, which requests used to wait for), printed with ``-s``.
"""

import os
import signal
import threading
import time

import psutil
import pytest

from fake_openrouter import FakeOpenRouter
from harness import CpuHogs, Sidecar, lives, poll, run_cli
from test_e2e_litellm import GATEWAY_TOKEN, real_sidecar
from test_e2e_port import START, workers
from test_nowait import QUIET, listener_lines
from traffic import Traffic

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def nowait_sidecar(tmp_path_factory):
    """The real LiteLLM (2 workers) for this module's events: each test takes it as the one before left it,
    running with two workers, and makes a fresh one only when it is not (a test failed midway, or it runs
    alone). A start costs 15 to 20 CPU seconds and up to a minute of the suite's serial path: three fewer.
    Every sidecar made is cleaned up at the module's end, pass or fail."""
    folder = tmp_path_factory.mktemp("nowait")
    upstream = FakeOpenRouter(str(folder / "upstream.jsonl")).start()
    made = []

    def make(**kwargs):
        sub = folder / f"s{len(made)}"
        sub.mkdir()
        made.append(Sidecar(str(sub), **kwargs))
        return made[-1]

    def serving(name):
        if made:
            st = made[-1].state()
            if st is not None and st.state.value == "running" and st.pid and len(workers(st.pid)) == 2:
                return made[-1], st
            made[-1].cleanup()  # not as it should be: gone before a fresh one starts beside it
        return real_sidecar(make, upstream, 2, f"name: {name}\n")

    try:
        yield serving
    finally:
        for sc in made:
            sc.cleanup()
        upstream.stop()


def flowing_kept_alive(sc):
    """The gateway's traffic over kept-alive connections, flowing; return it and its quiet window's longest wait."""
    traffic = Traffic(sc.port, GATEWAY_TOKEN, "agentroute-fast", rate=5, streams=(10,), keepalive=True)
    traffic.timeout = traffic.pool.timeout = START
    traffic.start()
    poll(lambda: traffic.short["ok"] >= 5, 60, what="traffic flowing")
    t0 = time.monotonic()
    time.sleep(QUIET)  # the quiet window the traffic runs through (a measurement, not a synchronisation)
    return traffic, traffic.longest_between(t0, time.monotonic())


@pytest.mark.parametrize("busy", [False, True], ids=["idle", "busy"])
def test_real_litellm_sigkill_orphans_serve_until_the_replacement_answers(nowait_sidecar, busy):
    sc, st = nowait_sidecar("nowait")
    poll(lambda: len(workers(st.pid)) == 2, 60, what="two workers")
    log_from = os.path.getsize(sc.log_file)  # the sidecar is shared: this test's part of its log
    traffic, quiet = flowing_kept_alive(sc)
    orphans = workers(st.pid)
    offset = os.path.getsize(os.path.join(sc.out, "listener.log"))
    hogs = CpuHogs() if busy else None  # a host busy with other work while the replacement starts
    try:
        killed_at = time.monotonic()
        os.kill(st.pid, signal.SIGKILL)
        sc.wait_state("running", START, pred=lambda s: s.pid not in (None, st.pid))
        start = time.monotonic() - killed_at
        if hogs is not None:
            hogs.stop()
        poll(lambda: not any(lives(p) for p in orphans), 90,
             what="the orphans drained")
    finally:
        if hogs is not None:
            hogs.stop()
        traffic.stop()  # passed or not: the next test shares this sidecar
    longest = traffic.longest_between(killed_at)
    print(f"\nROW real LiteLLM | SIGKILL of the main process ({'busy' if busy else 'idle'} host), kept-alive clients | "
          f"longest wait {longest:.2f} s "
          f"(quiet {quiet:.2f} s; the replacement took {start:.1f} s to serve) | {traffic.summary()}")
    failures = [(round(sent - killed_at, 2), round(took, 2), out) for sent, took, out in traffic.failures()]
    print(f"failures (sent after the kill, took, outcome): {failures}")
    lines = listener_lines(sc, offset)
    with open(sc.log_file, errors="replace") as fh:
        fh.seek(log_from)
        tail = fh.read().splitlines()[-60:]
    assert traffic.lost == 0, ((traffic.summary(), lines, tail))
    assert traffic.pool.reused_failed == 0, ((traffic.summary(), lines, tail))
    assert (longest - quiet) / start < 0.25, (traffic.summary(), lines)
    assert "(hung)" not in "\n".join(tail), tail  # a worker busy or starved is no hung worker
    served = [i for i, msg in enumerate(lines) if msg.endswith("-> running")]
    drained = [i for i, msg in enumerate(lines) if "draining orphaned process(es)" in msg]
    assert served, lines
    assert drained, lines
    assert drained[0] > served[0], lines


class PeakPss:
    """The tree's PSS (launcher and every child) sampled every half second: the peak while two trees overlap."""

    def __init__(self, pid):
        self.pid, self.peak, self.stop = pid, 0.0, threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while not self.stop.wait(0.5):
            try:
                root = psutil.Process(self.pid)
                procs = [root] + root.children(recursive=True)
                self.peak = max(self.peak, sum(p.memory_full_info().pss for p in procs) / 2**20)
            except psutil.Error:
                continue

    def done(self):
        self.stop.set()
        self.thread.join(5)
        return self.peak


class Switch:
    """When every new worker of the tree first serves (``at``, monotonic): the new image imported, forked, answered."""

    def __init__(self, pid, old, count):
        self.at, self.stop = None, threading.Event()
        threading.Thread(target=self._loop, args=(pid, old, count), daemon=True).start()

    def _loop(self, pid, old, count):
        while self.at is None and not self.stop.wait(0.1):
            try:
                if len({p.pid for p in workers(pid)} - old) >= count:
                    self.at = time.monotonic()
            except psutil.Error:
                continue


def replaced_in_place(serving, name, event, act, workers_after=2, cold_tail=False):
    """Run ``act`` (a restart or an apply in place) under kept-alive traffic; nothing lost, nobody waited for the
    new image's import, the same pid with new workers only. Return what ``act`` returned.

    ``cold_tail``: judge the import alone (requests sent before the new workers all serve) and bound what the
    cold new workers cost after it (LiteLLM imports more on a worker's first request) by what a stop-then-start
    would cost besides: the whole replacement.
    """
    sc, st = serving(name)
    poll(lambda: len(workers(st.pid)) == 2, 60, what="two workers")
    old = set(p.pid for p in workers(st.pid))
    traffic, quiet = flowing_kept_alive(sc)
    idle = PeakPss(st.pid)
    time.sleep(2)  # two samples of the tree before the replacement (a measurement)
    before = idle.done()
    pss, switch = PeakPss(st.pid), Switch(st.pid, old, workers_after)
    try:
        asked_at = time.monotonic()
        res = act(sc)
        took = time.monotonic() - asked_at
        peak = pss.done()
        poll(lambda: switch.at is not None, 60, what="every new worker serving")
    finally:
        pss.done()
        switch.stop.set()
        traffic.stop()  # passed or not: the next test shares this sidecar
    longest = traffic.longest_between(asked_at)
    before_switch, tail = traffic.longest_between(asked_at, switch.at), traffic.longest_between(switch.at)
    print(f"\nROW real LiteLLM | {event} | longest wait {longest:.2f} s (quiet {quiet:.2f} s; "
          f"it took {took:.1f} s; new workers all served after {switch.at - asked_at:.1f} s: longest before "
          f"{before_switch:.2f} s, after {tail:.2f} s) | PSS {before:.0f} MB before, peak {peak:.0f} MB during | "
          f"{traffic.summary()}")
    slowest = sorted(((round(took_, 2), round(sent - asked_at, 2)) for sent, took_, _ in traffic.took
                      if sent >= asked_at), reverse=True)[:5]
    print(f"slowest (took, sent after it was asked): {slowest}")
    assert res.returncode == 0, res.stdout + res.stderr
    assert traffic.lost == 0, traffic.summary()
    assert traffic.pool.reused_failed == 0, traffic.summary()
    # the old workers serve through the new image's import; the new ones' first requests are cold (LiteLLM
    # imports more on its first request), which a start costs too
    if cold_tail:
        assert (before_switch - quiet) / (switch.at - asked_at) < 0.5, traffic.summary()
        assert tail - quiet < took, traffic.summary()
    else:
        assert (longest - quiet) / took < 0.5, traffic.summary()
    assert sc.state().pid == st.pid
    poll(lambda: len(workers(st.pid)) == workers_after, 60, what=f"{workers_after} workers")
    assert not old & set(p.pid for p in workers(st.pid))
    return res


def test_real_litellm_restart_in_place_waits_for_nothing(nowait_sidecar):
    res = replaced_in_place(nowait_sidecar, "nowait-restart", "sidecar-plugin restart (in place)",
                            lambda sc: run_cli("restart", "--state-file", sc.state_file, "-s", "unix://" + sc.sock,
                                               timeout=START + 120))
    assert "in place" in res.stdout, res.stdout + res.stderr


def test_real_litellm_apply_of_the_worker_count_waits_for_nothing(nowait_sidecar):
    res = replaced_in_place(nowait_sidecar, "nowait-apply", "apply --workers 2 -> 3 (in place)",
                            lambda sc: run_cli("apply", *sc.render_args, "-s", "unix://" + sc.sock, "--workers", "3",
                                               env=sc.render_env, timeout=START + 120), workers_after=3, cold_tail=True)
    assert "replacing its tree in place (workers changed)" in res.stdout, res.stdout
