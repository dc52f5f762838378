#!/usr/bin/env python3
"""Detection speed and cost of sidecar_plugin against the peers, in one run on one machine.

Every figure is measured over ``--reps`` repetitions (default 20) with a real
supervisord and the stand-in LiteLLM from tests/ (forked workers included),
no network. Peers run in the same process, against the same stand-in:

- the Go Supervisor's method: probe /health/liveliness every 250 ms;
- superlance ``httpok`` at its best setting (TICK_5, ``-t 1``);
- plain supervisord (stopasgroup/killasgroup, no listener);
- Kubernetes' default liveness probe, as arithmetic (period 10 s x 3 failures).

Then the traffic section (benchmarks/traffic_bench.py): the real LiteLLM
under traffic, side by side with plain supervisord: requests failed and
streams cut during apply and stop, and false hang kills under overload; and
the port-never-closes section (benchmarks/port_bench.py): every event of
issue 31 (a quiet window, SIGKILL of the main process, apply of a model, a
worker count or another LiteLLM install, ``sidecar-plugin restart``,
``supervisorctl restart`` and ``reload``, stop + start, a hung worker, the
tree hung) under kept-alive clients, with refused, failed, cut, the longest
wait against the same run's quiet window, the peak PSS, and the memory of
each setup.

Writes benchmarks/RESULTS.md and benchmarks/latency.png.

    python benchmarks/run.py [--reps N] [--quick] [--no-traffic]       (make bench)
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
import timeit
from typing import Callable, Dict, List, Optional, Tuple

import psutil
import requests

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "support"))
sys.path.insert(0, HERE)

from harness import Sidecar, poll  # noqa: E402
from sidecar_plugin.client import Sidecar as Client, read_state  # noqa: E402

Samples = Dict[Tuple[str, str], List[float]]  # (figure, tool) -> seconds
NEVER = float("inf")


def session() -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    return s


def healthy(port: int, http: requests.Session, timeout: float = 0.2) -> bool:
    try:
        return http.get(f"http://127.0.0.1:{port}/health/liveliness", timeout=timeout).status_code == 200
    except requests.RequestException:
        return False


def first_time(check: Callable[[], bool], timeout: float, interval: float) -> float:
    """Return time.time() of the first check() that holds (NEVER if none within timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return time.time()
        time.sleep(interval)
    return NEVER


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def replace_listener(sc: Sidecar, section: str) -> None:
    """Swap the rendered [eventlistener:] for a peer's (or for nothing)."""
    path = os.path.join(sc.out, "sidecar.conf")
    text = open(path).read()
    text = text[:text.index("[eventlistener:")] + section
    with open(path, "w") as fh:
        fh.write(text)


HTTPOK = os.path.join(os.path.dirname(sys.executable), "httpok")


def httpok_section(sc: Sidecar) -> str:
    return (f"[eventlistener:httpok]\ncommand={HTTPOK} -p {sc.program} -t 1 "
            f"http://127.0.0.1:{sc.port}/health/liveliness\nevents=TICK_5\n"
            f"stderr_logfile={sc.out}/httpok.log\nstdout_logfile=NONE\nautorestart=true\nstartsecs=0\n")


def start_httpok_peer(sc: Sidecar) -> None:
    """Run ``sc`` watched by httpok instead of our listener; fail at once if httpok does not run."""
    replace_listener(sc, httpok_section(sc))
    sc.start_supervisord(wait_state=None)
    poll(lambda: sc.rpc().supervisor.getProcessInfo("httpok")["statename"] == "RUNNING", 30,
         what="httpok running (see its supervisord.log)")


class Bench:
    def __init__(self, reps: int, idle: float, root: str) -> None:
        self.reps = reps
        self.idle = idle
        self.root = root
        self.samples: Samples = {}
        self.notes: Dict[str, str] = {}
        self.made: List[Sidecar] = []
        self.http = session()

    def add(self, figure: str, tool: str, value: float) -> None:
        self.samples.setdefault((figure, tool), []).append(value)

    def sidecar(self, **kw) -> Sidecar:
        folder = tempfile.mkdtemp(dir=self.root)
        sc = Sidecar(folder, **kw)
        self.made.append(sc)
        return sc

    def cleanup(self) -> None:
        for sc in self.made:
            sc.cleanup()

    def log(self, text: str) -> None:
        print(text, flush=True)

    # 1. first healthy answer -> running
    def healthy_to_running(self) -> None:
        self.log("healthy -> running ...")
        sc = self.sidecar(mode={"start_delay": 0.5}, render_args=["--no-autostart"])
        sc.start_supervisord(wait_state="stopped")
        rpc = sc.rpc()
        for _ in range(self.reps):
            started = time.time()
            rpc.supervisor.startProcess(sc.program, False)
            t_healthy = first_time(lambda: healthy(sc.port, self.http, 0.05), 20, 0.002)
            st = sc.wait_state("running", 20, pred=lambda s: s.since >= started)
            self.add("healthy -> running", "sidecar_plugin", st.since - t_healthy)
            # the Go Supervisor's method: probes every 250 ms from the start
            n = int((t_healthy - started) / 0.25) + 1
            self.add("healthy -> running", "Go method (250 ms poll)", started + n * 0.25 - t_healthy)
            rpc.supervisor.stopProcess(sc.program, True)
            sc.wait_state("stopped", 20, pred=lambda s: s.supervisor_state == "STOPPED")
        self.notes[("healthy -> running", "httpok")] = "n/a: httpok has no starting state"

    # 2. SIGKILL of the parent -> crashed
    def sigkill_to_crashed(self) -> None:
        self.log("SIGKILL -> crashed ...")
        sc = self.sidecar()
        sc.start_supervisord()
        for _ in range(self.reps):
            st = sc.wait_state("running", 30, pred=lambda s: s.pid is not None and alive(s.pid)
                               and sc.info()["statename"] == "RUNNING")  # past startsecs: no BACKOFF
            pid = st.pid
            t_kill = time.time()
            os.kill(pid, signal.SIGKILL)
            # supervisord's own view, polled meanwhile (its main loop ticks once a second)
            t_sup = first_time(lambda: sc.info()["pid"] != pid or sc.info()["statename"] != "RUNNING", 10, 0.005)
            crashed = sc.wait_state("crashed", 10, pred=lambda s: s.since >= t_kill)
            self.add("SIGKILL -> crashed", "sidecar_plugin", crashed.since - t_kill)
            self.add("SIGKILL -> crashed", "supervisord notices (EXITED)", t_sup - t_kill)
            # Go method: the next 250 ms probe fails (no orphans with 1 worker: the port closes)
            phase = (t_kill - st.since) % 0.25
            self.add("SIGKILL -> crashed", "Go method (250 ms poll)", 0.25 - phase)
        self.notes[("SIGKILL -> crashed", "httpok")] = ("n/a: httpok sees no exit; supervisord restarts the "
                                                       "process before a TICK_5 probe can fail")

    # 3. hang -> detected, -> serving again
    def hang(self) -> None:
        self.log("hang (SIGSTOP) ...")
        ours = self.sidecar(render_args=["--stop-timeout", "5"])
        peer = self.sidecar(render_args=["--stop-timeout", "5"])
        ours.start_supervisord()
        start_httpok_peer(peer)
        rng = random.Random(5)
        for tool, sc in (("sidecar_plugin", ours), ("httpok (TICK_5, -t 1)", peer)):
            for _ in range(self.reps):
                poll(lambda: sc.info()["statename"] == "RUNNING" and healthy(sc.port, self.http), 60, what="running")
                pid = sc.info()["pid"]
                if tool == "sidecar_plugin":
                    sc.wait_state("running", 30, pred=lambda s: s.pid == pid)
                # a random phase against supervisord's 5 s ticks, so httpok is not measured phase-locked
                time.sleep(rng.uniform(0.0, 5.0))
                t_stop = time.time()
                os.kill(pid, signal.SIGSTOP)
                try:
                    if tool == "sidecar_plugin":
                        detected = sc.wait_state("crashed", 30, pred=lambda s: s.since >= t_stop).since
                    else:
                        detected = first_time(lambda: sc.info()["statename"] != "RUNNING" or sc.info()["pid"] != pid,
                                              60, 0.01)
                    back = first_time(lambda: sc.info()["pid"] not in (0, pid) and healthy(sc.port, self.http),
                                      60, 0.01)
                finally:
                    try:
                        os.kill(pid, signal.SIGCONT)
                    except ProcessLookupError:
                        pass
                self.add("hang -> detected", tool, detected - t_stop)
                self.add("hang -> serving again", tool, back - t_stop)
        # Kubernetes defaults: periodSeconds 10, failureThreshold 3, timeoutSeconds 1; the hang starts
        # uniformly within a period; then SIGTERM is ignored for terminationGracePeriodSeconds (30 s)
        for i in range(self.reps):
            offset = 10.0 * (i + 0.5) / self.reps
            detect = (10.0 - offset) + 2 * 10.0 + 1.0
            self.add("hang -> detected", "Kubernetes liveness defaults (computed)", detect)
            self.add("hang -> serving again", "Kubernetes liveness defaults (computed)", detect + 30.0 + 0.2)
        self.notes["stop"] = "both listeners run with --stop-timeout 5 (supervisord stopwaitsecs=5)"

    # 4. SIGKILL of the parent with 2 workers -> port free, serving again
    def orphans(self) -> None:
        self.log("SIGKILL with 2 workers -> port free ...")
        bound = 5.0
        ours = self.sidecar(workers=2)
        plain = self.sidecar(workers=2)
        replace_listener(plain, "")
        ours.start_supervisord()
        plain.start_supervisord(wait_state=None)
        for tool, sc in (("sidecar_plugin", ours), ("plain supervisord (killasgroup, no listener)", plain)):
            for _ in range(self.reps):
                poll(lambda: sc.info()["statename"] == "RUNNING"
                     and len(psutil.Process(sc.info()["pid"]).children()) == 2
                     and healthy(sc.port, self.http), 60, what="running with 2 workers")
                pid = sc.info()["pid"]
                old = [pid] + [p.pid for p in psutil.Process(pid).children()]
                t_kill = time.time()
                os.kill(pid, signal.SIGKILL)
                free = first_time(lambda: not any(alive(p) for p in old[1:]), bound, 0.002)
                back = NEVER if free == NEVER else first_time(  # the orphans' port: a new tree cannot bind
                    lambda: sc.info()["statename"] == "RUNNING" and sc.info()["pid"] not in old
                    and healthy(sc.port, self.http) and not (set(sc.port_listeners()) & set(old)), bound + 10, 0.01)
                self.add("2 workers: SIGKILL -> port free", tool, free - t_kill)
                self.add("2 workers: SIGKILL -> serving again", tool, back - t_kill)
                if free == NEVER:  # clean up the orphans ourselves before the next repetition
                    for p in old[1:]:
                        try:
                            os.kill(p, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                    poll(lambda: not any(alive(p) for p in old[1:]), 10, what="orphans gone")
                    sc.rpc().supervisor.stopProcess(sc.program, True) if sc.info()["statename"] == "RUNNING" else None
                    try:
                        sc.rpc().supervisor.startProcess(sc.program, True)
                    except Exception:
                        pass
        self.notes["orphans"] = f"'never' = not within {bound:g} s of the kill (the orphans keep the port)"

    # 5. listener cost while idle
    def idle_cost(self) -> Dict[str, Tuple[float, float]]:
        self.log(f"idle cost over {self.idle:g} s ...")
        ours = self.sidecar()
        peer = self.sidecar()
        ours.start_supervisord()
        start_httpok_peer(peer)
        poll(lambda: peer.info()["statename"] == "RUNNING", 30, what="peer running")
        procs = {"sidecar_plugin": psutil.Process(ours.listener_info()["pid"]),
                 "httpok (TICK_5)": psutil.Process(peer.rpc().supervisor.getProcessInfo("httpok")["pid"])}
        ours.wait_state("running", 30)
        t0 = time.monotonic()
        before = {k: p.cpu_times() for k, p in procs.items()}
        rss: Dict[str, List[float]] = {k: [] for k in procs}
        while time.monotonic() - t0 < self.idle:
            for k, p in procs.items():
                rss[k].append(p.memory_info().rss / 2**20)
            time.sleep(1.0)
        elapsed = time.monotonic() - t0
        out = {}
        for k, p in procs.items():
            after = p.cpu_times()
            cpu = (after.user + after.system - before[k].user - before[k].system) / elapsed * 100
            out[k] = (max(rss[k]), cpu)
        return out

    # 6. event flood
    def flood(self) -> Tuple[int, float]:
        self.log("event flood ...")
        sc = self.sidecar()
        with open(sc.conf, "a") as fh:
            names = [f"f{i:02d}" for i in range(50)]
            for n in names:
                fh.write(f"\n[program:{n}]\ncommand=/bin/sleep 1000\nautostart=false\nstartsecs=0\n"
                         f"stdout_logfile=NONE\nstderr_logfile=NONE\n")
            fh.write(f"\n[group:flood]\nprograms={','.join(names)}\n")
        sc.start_supervisord()
        stop = threading.Event()
        count = [0]

        def flooder() -> None:
            rpc = sc.rpc()
            while not stop.is_set():
                rpc.supervisor.startProcessGroup("flood", True)
                rpc.supervisor.stopProcessGroup("flood", True)
                count[0] += 50 * 4  # STARTING, RUNNING, STOPPING, STOPPED per program
        th = threading.Thread(target=flooder, daemon=True)
        th.start()
        t0 = time.monotonic()
        poll(lambda: count[0] >= 2000, 120, interval=0.1, what="the flood to build up")
        for _ in range(self.reps):
            st = sc.wait_state("running", 30, pred=lambda s: s.pid is not None and alive(s.pid)
                               and sc.info()["statename"] == "RUNNING")  # past startsecs: no BACKOFF
            t_kill = time.time()
            os.kill(st.pid, signal.SIGKILL)
            crashed = sc.wait_state("crashed", 30, pred=lambda s: s.since >= t_kill)
            self.add("flood: SIGKILL -> crashed", "sidecar_plugin", crashed.since - t_kill)
        poll(lambda: count[0] >= 10000, 300, interval=0.1, what="10,000 events")
        stop.set()
        th.join(60)
        rate = count[0] / (time.monotonic() - t0)
        log = open(os.path.join(sc.dir, "supervisord.log")).read()
        overflow = [line for line in log.splitlines() if "overflow" in line and "agentroute-sidecar-health" in line]
        self.notes["flood"] = (f"{count[0]} PROCESS_STATE events for 50 other programs at {rate:.0f}/s during the "
                               "repetitions; events dropped for the sidecar listener (buffer overflow): "
                               f"{len(overflow)}")
        return count[0], rate

    # 7. read_state
    def read_cost(self) -> None:
        self.log("read_state ...")
        sc = self.sidecar()
        sc.start_supervisord()
        sc.wait_state("running", 30)
        client = Client(state_file=sc.state_file)
        for _ in range(self.reps):
            self.add("read_state per call", "read_state", timeit.timeit(lambda: read_state(sc.state_file),
                                                                         number=10000) / 10000)
            self.add("read_state per call", "Sidecar.state()", timeit.timeit(client.state, number=10000) / 10000)


def pct(values: List[float], q: float) -> float:
    vals = sorted(values)
    if not vals:
        return float("nan")
    k = (len(vals) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(vals) - 1)
    if vals[lo] == vals[hi]:  # also 'never' (inf): inf - inf would be nan
        return vals[lo]
    return vals[lo] + (vals[hi] - vals[lo]) * (k - lo)


def fmt(v: float, unit: str = "s") -> str:
    if v == NEVER:
        return "never"
    if unit == "us":
        return f"{v * 1e6:.1f} µs"
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"


GOALS = {
    "healthy -> running": 0.3, "SIGKILL -> crashed": 0.5, "hang -> detected": 5.0,
    "2 workers: SIGKILL -> port free": 1.0,
}


def report(b: Bench, idle: Dict[str, Tuple[float, float]], started: float, argv: List[str],
           traffic: Optional[List[str]] = None) -> str:
    lines = [
        "# Benchmark results", "",
        f"- machine: {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
        f"{platform.platform()}; Python {platform.python_version()}",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}; "
        f"took {time.time() - started:.0f} s",
        f"- command: `make bench` (= `{' '.join(argv)}`)",
        f"- repetitions per figure: {b.reps}; the stand-in LiteLLM from tests/ under a real supervisord",
        "",
        "| figure | tool | n | median | p95 | ratio of medians (tool / sidecar_plugin) | goal |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    figures: List[str] = []
    for fig, _ in b.samples:
        if fig not in figures:
            figures.append(fig)
    for fig in figures:
        unit = "us" if fig == "read_state per call" else "s"
        base = b.samples.get((fig, "sidecar_plugin"))
        base_med = statistics.median(base) if base else None
        for (f, tool), vals in b.samples.items():
            if f != fig:
                continue
            med, p95 = statistics.median(vals), pct(vals, 0.95)
            ratio = ""
            if base_med and tool != "sidecar_plugin":
                ratio = "never" if med == NEVER else f"{med / base_med:.1f}x"
            goal = ""
            if tool == "sidecar_plugin" and fig in GOALS:
                goal = f"p95 <= {fmt(GOALS[fig])}: {'PASS' if p95 <= GOALS[fig] else 'MISS'}"
            lines.append(f"| {fig} | {tool} | {len(vals)} | {fmt(med, unit)} | {fmt(p95, unit)} | {ratio} | {goal} |")
        for key, note in b.notes.items():
            if isinstance(key, tuple) and key[0] == fig:
                lines.append(f"| {fig} | {key[1]} | - | - | - | {note} | |")
    for tool, (rss, cpu) in idle.items():
        goal = f"RSS <= 40 MB: {'PASS' if rss <= 40 else 'MISS'}; CPU <= 1 %: {'PASS' if cpu <= 1 else 'MISS'}" \
            if tool == "sidecar_plugin" else ""
        lines.append(f"| listener idle for {b.idle:g} s: max RSS / CPU | {tool} | 1 | {rss:.1f} MB | "
                     f"{max(cpu, 0.0) + 0.0:.2f} % of a core | | {goal} |")  # no "-0.00"
    lines += ["", "Notes:", ""]
    lines += [f"- {note}" for key, note in b.notes.items() if not isinstance(key, tuple)]
    lines += [
        "- Go method: AgentRoute's Go Supervisor probes every 250 ms; its figures are computed from the "
        "same events (the first probe after the change), in the same run.",
        "- Kubernetes: default liveness probe (periodSeconds 10, failureThreshold 3, timeoutSeconds 1), "
        "hang start spread uniformly over a period; serving again adds terminationGracePeriodSeconds (30 s, "
        "a hung process ignores SIGTERM) and a 0.2 s start. Computed, not measured.",
        "- httpok restarts on a single failed probe at a TICK_5 (so it detects 0-6 s after the hang, "
        "uniformly), so a slow answer under load kills a busy sidecar; sidecar_plugin calls a SIGSTOPped "
        "sidecar hung when its main process is seen stopped for 1.5 s with no answer since, and otherwise "
        "only after 20 s without any answer and without a newly accepted connection (probes do not wait on "
        "each other; a slow answer still counts).",
        "- 'serving again' means: a new pid answers /health/liveliness and no process of the old tree holds the port.",
        "", "![latency distributions](latency.png)", "",
    ]
    if traffic:
        lines += traffic + [""]
    return "\n".join(lines)


def plot(b: Bench, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = [f for f in dict.fromkeys(f for f, _ in b.samples) if f != "read_state per call"]
    fig, axes = plt.subplots(len(figs), 1, figsize=(9, 2.3 * len(figs)))
    for ax, name in zip(axes, figs):
        items = [(tool, [v for v in vals if v != NEVER]) for (f, tool), vals in b.samples.items() if f == name]
        items = [(t, v) for t, v in items if v]
        ax.boxplot([v for _, v in items], orientation="horizontal", tick_labels=[t for t, _ in items], showfliers=True)
        ax.set_xscale("log")
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("seconds (log)", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--idle", type=float, default=60.0)
    p.add_argument("--quick", action="store_true", help="3 repetitions, 5 s idle: a smoke test")
    p.add_argument("--out", default=HERE)
    p.add_argument("--no-traffic", action="store_true", help="skip the traffic section (real LiteLLM)")
    p.add_argument("--traffic", default="apply,stop,overload",
                   help="the traffic scenarios to run, comma-separated")
    p.add_argument("--port-events", default="quiet,main_kill,workers_apply,model_apply,plugin_restart,restart,"
                   "stop_start,reload,binary_apply,worker_hang,hang_kill",
                   help="the events of issue 31 to run (real LiteLLM; port_bench.EVENTS), comma-separated")
    a = p.parse_args()
    if a.quick:
        a.reps, a.idle = 3, 5.0
    if not os.access(HTTPOK, os.X_OK):
        print(f"{HTTPOK} not found: the peer httpok comes from superlance (pip install -e '.[bench]')",
              file=sys.stderr)
        return 2
    started = time.time()
    root = tempfile.mkdtemp(prefix="sidecar-bench-")
    b = Bench(a.reps, a.idle, root)
    try:
        b.healthy_to_running()
        b.cleanup()
        b.sigkill_to_crashed()
        b.cleanup()
        b.hang()
        b.cleanup()
        b.orphans()
        b.cleanup()
        idle = b.idle_cost()
        b.cleanup()
        b.flood()
        b.cleanup()
        b.read_cost()
    finally:
        b.cleanup()
    traffic: Optional[List[str]] = None
    if not a.no_traffic:
        from traffic_bench import TrafficBench

        tb = TrafficBench(root, b.log)
        try:
            tb.run([t for t in a.traffic.split(",") if t])
            from port_bench import PortBench

            pb = PortBench(tb)
            pb.run([e for e in a.port_events.split(",") if e])
        finally:
            tb.close()
            tb.stop_upstream()
        traffic = tb.table() + [""] + pb.table()
    text = report(b, idle, started, [os.path.relpath(sys.executable), "benchmarks/run.py"] + sys.argv[1:], traffic)
    text += kept_sections(os.path.join(a.out, "RESULTS.md"))
    with open(os.path.join(a.out, "RESULTS.md"), "w") as fh:
        fh.write(text)
    plot(b, os.path.join(a.out, "latency.png"))
    print(text)
    return 0


# Sections other scripts write into RESULTS.md, run on their own (not by make bench): kept as they are.
KEPT_SECTIONS = ("## Traffic metrics: what the callback costs",)  # benchmarks/metrics_cost.py


def kept_sections(path: str) -> str:
    """The sections of the previous RESULTS.md that this run does not measure, each to its next heading."""
    try:
        with open(path) as fh:
            old = fh.read()
    except OSError:
        return ""
    kept = []
    for heading in KEPT_SECTIONS:
        start = old.find("\n" + heading + "\n")
        if start >= 0:
            end = old.find("\n## ", start + 1)
            kept.append(old[start:end if end >= 0 else len(old)].rstrip("\n") + "\n")
    return "".join(kept)


if __name__ == "__main__":
    sys.exit(main())
