"""A memory budget per worker (issue 24), with a real supervisord and the sidecar's real launcher.

The launcher serves ``tests/support/light_app.py`` (``SIDECAR_APP``) instead of
LiteLLM's app, so the replacement path is the launcher's own: the listener
samples the tree's PSS, asks the launcher over the tree's control socket to
replace the worker over budget, the replacement serves first, then the old
worker drains. Each test counts what a gateway that never retries sees.
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import psutil
import pytest

from harness import MASTER_KEY, metric_samples, poll, run_cli
from traffic import Traffic, one_request

pytestmark = pytest.mark.integration

HERE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "support")
FAST = "agentroute-fast"


def light_binary(folder):
    """An entry point render takes for LiteLLM's own (a Python script naming litellm): the launcher runs it."""
    path = os.path.join(folder, "litellm-light")
    with open(path, "w") as fh:
        fh.write(f"#!{sys.executable}\n# stands for litellm's entry point: the launcher serves light_app instead\n")
    os.chmod(path, 0o755)
    return path


def light_sidecar(make_sidecar, tmp_path, mode, args=(), workers=2):
    sc = make_sidecar(workers=workers, binary=light_binary(str(tmp_path)), mode=mode,
                      env={"SIDECAR_APP": "light_app:app", "PYTHONPATH": HERE},
                      render_args=["--metrics-file", os.path.join(str(tmp_path), "m.prom")] + list(args))
    return sc


class Streams:
    """A 3 s stream started every second until stopped: some are always in flight on every worker."""

    def __init__(self, port):
        self.port, self.outcomes, self.stop = port, Counter(), threading.Event()
        self.threads = []

    def _one(self):
        self.outcomes[one_request(self.port, MASTER_KEY, FAST, stream_seconds=3.0, timeout=60)] += 1

    def _loop(self):
        while not self.stop.wait(1.0):
            t = threading.Thread(target=self._one, daemon=True)
            t.start()
            self.threads.append(t)

    def __enter__(self):
        threading.Thread(target=self._loop, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(70)


def memory(sc):
    with open(sc.state_file) as fh:
        return json.load(fh)["memory"]


def counter_agrees(tmp_path, sc, name, least):
    """The metrics file's samples once its ``memory_<name>_total`` is the state file's count, at least ``least``."""
    prom = metric_samples(open(os.path.join(str(tmp_path), "m.prom")).read())
    value = prom.get((f"agentroute_sidecar_memory_{name}_total", (("program", sc.program),)))
    return prom if value is not None and value == memory(sc)[name] >= least else None


def events(sc, name):
    return [e for e in sc.history() if e.get("event") == name]


def test_a_worker_over_budget_is_replaced_under_traffic_nothing_lost(make_sidecar, tmp_path):
    sc = light_sidecar(make_sidecar, tmp_path, {"grow_mb": 1, "grow_cap_mb": 120},
                       ["--memory-budget", "60", "--memory-every", "0.5"])
    assert "--worker_control" in open(os.path.join(sc.out, "launch.json")).read()  # the launcher's argv
    sc.start_supervisord()
    st = sc.wait_state("running", 30)
    first = {c.pid for c in psutil.Process(st.pid).children()}
    assert len(first) == 2
    traffic = Traffic(sc.port, MASTER_KEY, FAST, rate=10).start()
    try:
        with Streams(sc.port) as streams:
            poll(lambda: first <= {e["pid"] for e in events(sc, "memory_replaced")}, 90,
                 what="both first workers replaced")
    finally:
        traffic.stop()
    print(f"\nROW | memory budget 60 MB | refused {traffic.short['refused']} | failed {traffic.short['failed']} | "
          f"streams {dict(streams.outcomes)} | ok {traffic.short['ok']} | longest {traffic.longest:.2f} s")
    assert traffic.short["refused"] == 0, traffic.summary()
    assert traffic.short["failed"] == 0, traffic.summary()
    assert streams.outcomes["ok"] >= 10, streams.outcomes
    assert set(streams.outcomes) == {"ok"}, streams.outcomes
    asked = events(sc, "memory_replace")
    assert first <= {e["pid"] for e in asked}, asked
    assert all(e["mb"] > 60 and e["budget_mb"] == 60 and e["measure"] == "pss" for e in asked), asked
    assert len(events(sc, "memory_replaced")) >= 2
    assert not events(sc, "memory_backoff")
    now_workers = {c.pid for c in psutil.Process(st.pid).children()}
    assert not now_workers & first
    assert len(now_workers) >= 2
    assert sc.state().pid == st.pid  # the main process stayed: no restart, no state change
    res = run_cli("status", "--state-file", sc.state_file)
    assert "memory (PSS): main" in res.stdout, res.stdout
    assert "budget 60 MB per worker" in res.stdout, res.stdout
    assert "replaced over budget:" in res.stdout, res.stdout
    got = sc.rpc().sidecar.getState(sc.program)
    assert got["memory"]["budget_mb"] == 60
    assert got["memory"]["replacements"] >= 2
    prom = poll(lambda: counter_agrees(tmp_path, sc, "replacements", 2), 10, what="the replacements in the metrics")
    assert ("agentroute_sidecar_memory_replacements_total", (("program", sc.program),)) in prom
    assert any(name == "agentroute_sidecar_memory_bytes" and ("role", "worker") in labels for name, labels in prom)
    assert "replaced by" in open(sc.log_file).read()


def test_a_replacement_born_over_budget_backs_off(make_sidecar, tmp_path):
    sc = light_sidecar(make_sidecar, tmp_path, {"grow_mb": 1, "grow_cap_mb": 100, "born_mb": 80},
                       ["--memory-budget", "60", "--memory-every", "0.5"])
    sc.start_supervisord()
    sc.wait_state("running", 30)
    traffic = Traffic(sc.port, MASTER_KEY, FAST, rate=10).start()
    try:
        backoff = poll(lambda: events(sc, "memory_backoff"), 90, what="the back-off")[0]
        assert backoff["reason"] == "born_over_budget"
        assert backoff["mb"] > 60
        assert backoff["delay"] == 15
        replaced = len(events(sc, "memory_replace"))
        time.sleep(5)  # a window inside the 15 s back-off: measured, nothing replaced (not a loop)
        assert len(events(sc, "memory_replace")) == replaced
    finally:
        traffic.stop()
    assert traffic.short["refused"] == 0, traffic.summary()
    assert traffic.short["failed"] == 0, traffic.summary()
    mem = memory(sc)
    assert mem["backoffs"] >= 1
    assert mem["backoff"]["until"] > mem["sampled_at"] - 1
    res = run_cli("status", "--state-file", sc.state_file)
    assert "memory budget backing off" in res.stdout, res.stdout
    poll(lambda: counter_agrees(tmp_path, sc, "backoffs", 1), 10, what="the back-offs in the metrics")


def test_max_requests_recycles_a_worker_without_refusing(make_sidecar, tmp_path):
    sc = light_sidecar(make_sidecar, tmp_path, {}, ["--max-requests", "20", "--max-requests-jitter", "5"], workers=1)
    argv = " ".join(json.load(open(os.path.join(sc.out, "launch.json")))["argv"])  # the launcher's argv
    assert "--max_requests_before_restart 20 --max_requests_before_restart_jitter 5" in argv
    sc.start_supervisord()
    st = sc.wait_state("running", 30)
    first = {c.pid for c in psutil.Process(st.pid).children()}
    traffic = Traffic(sc.port, MASTER_KEY, FAST, rate=10).start()
    try:
        poll(lambda: {c.pid for c in psutil.Process(st.pid).children()} - first and traffic.short["ok"] > 60, 60,
             what="the worker recycled after its requests")
    finally:
        traffic.stop()
    assert traffic.short["refused"] == 0, traffic.summary()
    assert traffic.short["failed"] == 0, traffic.summary()
    assert sc.state().pid == st.pid

    # turning the budget on changes the launcher's command line: apply says why in the operator's words, and
    # replaces the tree in place (a launcher recycling by max requests supervises its worker)
    res = sc.apply("--memory-budget", "500")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "replacing its tree in place (memory budget on or off changed)" in res.stdout, res.stdout
    assert sc.state().pid == st.pid
    assert "--worker_control" in psutil.Process(st.pid).cmdline()


def test_a_worker_past_its_requests_is_replaced_by_one_serving_before_it_drains(make_sidecar, tmp_path):
    # uvicorn's own recycling ends a worker at its limit and forks the next once it is gone: two workers at their
    # limits together left nobody accepting for a start. The launcher replaces a spent worker as it does one over
    # a memory budget: the new one serving first, then the old one drains (its kept-alive connections closed
    # after their answer, never reset)
    sc = light_sidecar(make_sidecar, tmp_path, {}, ["--max-requests", "15"], workers=2)
    sc.start_supervisord()
    st = sc.wait_state("running", 30)
    traffic = Traffic(sc.port, MASTER_KEY, FAST, rate=10, keepalive=True).start()
    replaced = re.compile(r"worker (\d+) replaced by (\d+) \(it served its requests\)")
    try:
        poll(lambda: len(replaced.findall(open(sc.log_file).read())) >= 3, 60, what="three workers recycled")
    finally:
        traffic.stop()
    def drained():  # every replaced worker finished (the last may still drain its requests)
        text = open(sc.log_file).read()
        return text if all(f"Finished server process [{old}]" in text for old, _ in replaced.findall(text)) else None
    log = poll(drained, 30, what="the replaced workers drained")
    assert "Maximum request limit" not in log  # uvicorn's own exit at the limit: never reached
    for old, new in replaced.findall(log):
        # causal, not a race: the launcher terminates the old worker only once the new one is ready
        assert log.index(f"Started server process [{new}]") < log.index(f"Finished server process [{old}]"), (old, new)
    assert traffic.short["refused"] == 0, traffic.summary()
    assert traffic.short["failed"] == 0, traffic.summary()
    assert traffic.pool.reused_failed == 0, traffic.summary()
    assert sc.state().pid == st.pid


@pytest.mark.parametrize("args, words", [
    (["--memory-budget", "8"], "--memory-budget: must be a number of MB from 32"),
    (["--memory-every", "0.1"], "--memory-every: must be a number of seconds from 0.5 to 600"),
    (["--max-requests", "0"], "--max-requests: must be from 1"),
    (["--max-requests-jitter", "3"], "--max-requests-jitter: only with --max-requests"),
    (["--max-requests", "10", "--max-requests-jitter", "11"], "--max-requests-jitter: must be from 0 to"),
    (["--memory-budget", "lots"], "invalid int value"),
])
def test_bad_budget_options_are_refused_with_one_line(tmp_path, args, words):
    from harness import PROFILE, fake_binary, write

    profile = write(os.path.join(str(tmp_path), "p.yaml"), PROFILE)
    res = run_cli("render", "--profile", profile, "--out-dir", str(tmp_path), "--binary", fake_binary(str(tmp_path)),
                  *args, env={"OPENROUTER_API_KEY": "sk-or-x"})
    assert res.returncode == 2, res.stderr
    assert words in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) <= 3, res.stderr
    assert not os.path.exists(os.path.join(str(tmp_path), "sidecar.conf"))


def test_a_stand_in_without_control_socket_is_measured_and_backs_off_untouched(make_sidecar, tmp_path):
    # the stand-in (not LiteLLM's entry point) runs as given: no launcher, so nobody to replace a worker
    sc = make_sidecar(workers=2, mode={"grow_mb": 2, "grow_cap_mb": 80},
                      render_args=["--memory-budget", "40", "--memory-every", "0.5"])
    assert "--worker_control" not in open(os.path.join(sc.out, "sidecar.conf")).read()
    assert not os.path.exists(os.path.join(sc.out, "launch.json"))  # supervisord runs the command itself
    sc.start_supervisord()
    st = sc.wait_state("running", 30)
    workers = {c.pid for c in psutil.Process(st.pid).children()}
    traffic = Traffic(sc.port, MASTER_KEY, FAST, rate=10).start()
    try:
        backoff = poll(lambda: events(sc, "memory_backoff"), 60, what="the back-off")[0]
    finally:
        traffic.stop()
    assert backoff["reason"] == "replace_failed", backoff
    assert "no control socket" in backoff["message"], backoff
    assert traffic.short["refused"] == 0, traffic.summary()
    assert traffic.short["failed"] == 0, traffic.summary()
    assert {c.pid for c in psutil.Process(st.pid).children()} == workers  # nothing killed on a guess
    # the history line is appended before the state file is written: wait for the write, not on a guess
    poll(lambda: memory(sc)["failures"], 10, what="the failure in the state file")
    doc = memory(sc)
    assert doc["failures"] == 1
    assert doc["last"]["result"] == "failed"


@pytest.mark.parametrize("workers", [1, 2])
def test_after_a_rolling_reload_one_worker_or_two_a_worker_over_budget_is_replaced(make_sidecar, tmp_path, workers):
    # a rolling reload (SIGHUP) shows one worker more for a while: the budget must not take that for the
    # configured count (then it would wait for a worker that never comes, and never replace again)
    sc = light_sidecar(make_sidecar, tmp_path, {"grow_mb": 1, "grow_cap_mb": 120},
                       ["--memory-budget", "60", "--memory-every", "0.5"], workers=workers)
    sc.start_supervisord()
    st = sc.wait_state("running", 30)
    first = {c.pid for c in psutil.Process(st.pid).children()}
    assert len(first) == workers
    os.kill(st.pid, signal.SIGHUP)
    poll(lambda: not first & {c.pid for c in psutil.Process(st.pid).children()}, 30, what="the workers reloaded")
    traffic = Traffic(sc.port, MASTER_KEY, FAST, rate=10).start()
    try:
        poll(lambda: events(sc, "memory_replaced"), 60, what="a worker replaced after the reload")
    finally:
        traffic.stop()
    assert traffic.short["refused"] == 0, traffic.summary()
    assert traffic.short["failed"] == 0, traffic.summary()
    assert sc.state().pid == st.pid
    assert not events(sc, "memory_backoff")


def test_a_draining_worker_gone_zombie_leaves_the_sample_in_pss():
    """A worker that exited and is not reaped yet counts nothing; the tree's sample stays PSS.

    A fresh-clone CI run showed ``memory (RSS): ... worker 13620 0 MB``: the
    drained worker was a zombie, smaps_rollup refused it, the RSS fallback read
    0 MB and turned the whole sample (and ``status``) into RSS.
    """
    from sidecar_plugin.shell.listener.memory import memory_mb, sample_tree

    code = ("import subprocess, sys, time\n"
            "gone = subprocess.Popen(['true'])\n"
            "alive = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
            "print(gone.pid, alive.pid, flush=True)\n"
            "time.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        gone, alive = (int(p) for p in parent.stdout.readline().split())
        poll(lambda: psutil.Process(gone).status() == psutil.STATUS_ZOMBIE, 20, what="a zombie child")
        assert memory_mb(gone) == (None, "")
        mb, measure = memory_mb(alive)
        assert measure == "pss"
        assert mb is not None
        assert mb > 0
        procs, measure = sample_tree(parent.pid)
        assert measure == "pss"
        assert {p.pid for p in procs} == {parent.pid, alive}
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()
        parent.stdout.close()
