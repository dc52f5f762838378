"""The port-never-closes section of ``make bench``: every event of issue 31 under the gateway's traffic.

Two setups run the pinned LiteLLM with 2 workers under a real supervisord
(see traffic_bench.py): ``sidecar_plugin`` as rendered (supervisord owns the
port, the launcher serves LiteLLM's app on it, the listener) and ``plain
supervisord`` running LiteLLM's own CLI as an operator writes it. Each event
runs under issue 31's traffic: 5 short requests per second over a pool of
kept-alive connections (``traffic.Pool``, as the gateway's Go transport keeps
them) and a 10 s stream every 2 s (the loopback upstream streams 0.1 s per
token), every request waiting as long as a start can take (240 s), as
AgentRoute's gateway does (no timeout, no retry). Each run measures a quiet
window (5 s of the same traffic) before its event, then counts refused
connections, failed answers (those on a reused connection apart), cut
streams, the longest a short request sent after the event waited, and the
peak PSS of every process of the sidecar's trees (two overlap during a
replacement). Then the memory of each setup.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import xmlrpc.client
from typing import Callable, List, Optional

import psutil

from traffic_bench import FAST, TrafficBench, plain_section, profile_text  # first: it puts tests/ on the path

from harness import KEYS, MASTER_KEY, Sidecar, poll, run_cli  # noqa: E402
from traffic import Traffic, one_request  # noqa: E402

START = 240.0  # the longest a start of the real LiteLLM may take on a loaded 2-core host
SETTLE = 5.0  # seconds of answers after an event has been served again, before the count closes
QUIET = 5.0  # seconds of traffic measured before each event: the same run's quiet window
STREAM_EVERY, STREAM_SECONDS = 2.0, 10.0

EVENTS = ("quiet", "main_kill", "workers_apply", "model_apply", "plugin_restart", "restart", "stop_start",
          "reload", "binary_apply", "worker_hang", "hang_kill", "max_requests", "worker_kill")
DEFAULT_EVENTS = EVENTS[:-1]  # a worker's SIGKILL is no event of issue 31 (--only worker_kill runs it)
# the recycling event: each worker serves MAX_REQUESTS requests, then a new one replaces it (plain: LiteLLM's own
# --max_requests_before_restart). A memory replacement drains the same way (tests/integration/test_nowait.py
# counts both over kept-alive connections; tests/e2e/test_e2e_memory.py with the real LiteLLM)
MAX_REQUESTS = 40
RECYCLE_FOR = {"max_requests": 60.0}  # seconds of traffic meanwhile
RENDER = {"max_requests": ["--max-requests", str(MAX_REQUESTS)]}
PLAIN_EXTRA = {"max_requests": ["--max_requests_before_restart", str(MAX_REQUESTS)]}
TITLES = {
    "quiet": "none (a quiet window of 30 s)",
    "main_kill": "SIGKILL of the main process",
    "model_apply": "apply of a model change",
    "plugin_restart": "`sidecar-plugin restart`",
    "restart": "`supervisorctl restart`",
    "stop_start": "stop + start",
    "reload": "`supervisorctl reload`",
    "workers_apply": "apply --workers 2 -> 3",
    "binary_apply": "apply --binary naming another install",
    "worker_hang": "a hung worker (one SIGSTOPped, the main process answers)",
    "hang_kill": "the tree hung (SIGSTOPped)",
    "worker_kill": "SIGKILL of a worker",
    "max_requests": f"workers recycled by --max-requests {MAX_REQUESTS} ({RECYCLE_FOR['max_requests']:.0f} s)",
}
PLAIN_ABSENT = {"plugin_restart": "no such command (an operator's restart is `supervisorctl restart`)"}
HEADER = ("event", "setup", "refused", "failed", "streams cut", "longest wait", "same run's quiet window",
          "peak PSS", "note")


def other_install(folder: str, binary: str) -> str:
    """Another LiteLLM install: a virtualenv whose packages are this one's, with its own ``litellm`` entry point."""
    import sysconfig

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", folder], check=True, timeout=120)
    site = [os.path.join(r, d) for r, ds, _ in os.walk(os.path.join(folder, "lib")) for d in ds
            if d == "site-packages"][0]
    with open(os.path.join(site, "zz_bench.pth"), "w") as fh:
        fh.write(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
    entry = os.path.join(folder, "bin", "litellm")
    with open(binary) as src, open(entry, "w") as fh:
        fh.write(f"#!{os.path.join(folder, 'bin', 'python')}\n" + src.read().split("\n", 1)[1])
    os.chmod(entry, 0o755)
    return entry


def tree(pid: int) -> List[psutil.Process]:
    root = psutil.Process(pid)
    return [root] + root.children(recursive=True)


def workers(pid: int) -> List[psutil.Process]:
    return [c for c in psutil.Process(pid).children() if "resource_tracker" not in " ".join(c.cmdline())]


def gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class GatewayTraffic(Traffic):
    """Issue 31's traffic: short requests over kept-alive pooled connections, and a stream every 2 s (each on
    its own connection: a stream's connection is busy for its whole length anyway)."""

    def __init__(self, port: int) -> None:
        super().__init__(port, MASTER_KEY, FAST, rate=5, upstream_stream=True, keepalive=True)
        self.timeout = START
        if self.pool is not None:
            self.pool.timeout = START
        self.streams_sent = 0

    def _streams(self) -> None:
        started: List[threading.Thread] = []
        while not self.stop_event.is_set():
            t = threading.Thread(target=self._one_stream, args=(self.streams_sent,), daemon=True)
            t.start()
            started.append(t)
            self.streams_sent += 1
            self.stop_event.wait(STREAM_EVERY)
        for t in started:
            t.join(timeout=START + STREAM_SECONDS)

    def _one_stream(self, n: int) -> None:
        out = one_request(self.port, self.key, self.model, stream_seconds=STREAM_SECONDS,
                          upstream_stream=True, timeout=START + STREAM_SECONDS)
        with self.lock:
            self.stream_outcomes[n] = out

    def start(self) -> "GatewayTraffic":
        super().start()
        t = threading.Thread(target=self._streams, daemon=True)
        t.start()
        self.threads.append(t)
        return self


class PeakPss:
    """The summed PSS of every process of the sidecar's trees (the render's marker), sampled every second."""

    def __init__(self, sc: Sidecar) -> None:
        self.sc, self.peak, self.stop = sc, 0.0, threading.Event()
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        while not self.stop.wait(1.0):
            total = 0
            for p in self.sc.marked():
                try:
                    total += p.memory_full_info().pss
                except Exception:  # a process that exits while its smaps is read (psutil, OSError, ValueError)
                    continue
            self.peak = max(self.peak, total / 2**20)


class PortBench:
    def __init__(self, tb: TrafficBench) -> None:
        self.tb = tb
        self.rows: List[List[str]] = []
        self.memory: List[str] = []
        self.loads: List[float] = []
        self.other = other_install(os.path.join(tb.root, "other-litellm"), tb.binary)

    def answers(self, sc: Sidecar, model: str = FAST) -> bool:
        return one_request(sc.port, MASTER_KEY, model, timeout=START) == "ok"

    def running(self, sc: Sidecar) -> bool:
        try:
            return sc.info()["statename"] == "RUNNING" and self.answers(sc)
        except Exception:  # supervisord restarting (reload): any error of its socket
            return False

    def new_main(self, sc: Sidecar, old: int) -> Callable[[], bool]:
        def ok() -> bool:
            try:
                info = sc.info()
            except Exception:  # supervisord restarting (reload): any error of its socket
                return False
            return info["statename"] == "RUNNING" and info["pid"] not in (0, old) and self.answers(sc)
        return ok

    def settle(self, t: Traffic, served: Callable[[], bool], within: float = START) -> None:
        """Wait until the event is over (``served``), then SETTLE seconds of answers (bounded)."""
        poll(served, within, 0.5, what="served again")
        base = t.short["ok"]
        poll(lambda: t.short["ok"] >= base + int(SETTLE * 5), START, 0.2, what="answers after the event")

    # -- the events --
    def run_event(self, event: str, plain: bool) -> None:
        setup = "plain supervisord (LiteLLM's CLI)" if plain else "sidecar_plugin"
        if plain and event in PLAIN_ABSENT:
            self.rows.append([TITLES[event], setup, "-", "-", "-", "-", "-", "-", PLAIN_ABSENT[event]])
            return
        sc = self.tb.setup(plain, render=RENDER.get(event), plain_extra=PLAIN_EXTRA.get(event, ()))
        if event == "quiet":
            self.measure_memory(sc, setup)
        old = int(sc.info()["pid"])
        t = GatewayTraffic(sc.port).start()
        poll(lambda: t.short["ok"] >= 5, 120, 0.1, what="traffic answered")
        pss = PeakPss(sc)
        try:
            quiet_from = time.monotonic()
            time.sleep(QUIET)  # the quiet window the traffic runs through (a measurement)
            at = time.monotonic()
            self.loads.append(os.getloadavg()[0])
            note = self.event(event, plain, sc, t, old)
        finally:
            pss.stop.set()
            t.stop_event.set()
        longest = t.longest_between(at)
        t.stop(wait_streams=START)
        unfinished = t.streams_sent - len(t.stream_outcomes)
        if unfinished:
            note = "; ".join(x for x in (note, f"{unfinished} streams unfinished when the count closed") if x)
        if t.short["pending"]:  # unanswered when the count closed: their wait so far is in the longest
            longest = max(longest, t.longest)
            note = "; ".join(x for x in (note, f"{t.short['pending']} still waiting when the count closed") if x)
        quiet = t.longest_between(quiet_from, at) if event != "quiet" else longest
        slowest = max((x for x in t.took if x[0] >= at), key=lambda x: x[1], default=None)
        if slowest is not None and longest > quiet + 1.5:  # when it waited: which part of the event it met
            note = "; ".join(x for x in (note, f"the slowest sent {slowest[0] - at:.0f} s into the event") if x)
        self.record(event, setup, t, longest, quiet, pss.peak, note)

    def event(self, event: str, plain: bool, sc: Sidecar, t: Traffic, old: int) -> str:
        """Cause ``event`` and wait until it is served again; return a note."""
        if event == "quiet":
            time.sleep(30 - QUIET)
        elif event == "main_kill":
            os.kill(old, signal.SIGKILL)
            if plain:
                time.sleep(40)
                return f"after 40 s supervisord says {sc.info()['statename']}; the old workers still hold the port"
            self.settle(t, self.new_main(sc, old))
        elif event == "worker_kill":
            workers(old)[0].kill()
            time.sleep(20)
        elif event in ("restart", "reload"):
            sc.ctl(event, *([sc.program] if event == "restart" else []), timeout=START + 120)
            self.settle(t, self.new_main(sc, old))
        elif event == "stop_start":
            for verb in ("stop", "start"):
                if plain:
                    sc.ctl(verb, sc.program, timeout=START)
                else:
                    run_cli(verb, "--state-file", sc.state_file, "-s", "unix://" + sc.sock, timeout=START + 120)
            self.settle(t, self.new_main(sc, old))
        elif event == "plugin_restart":
            t0 = time.monotonic()
            res = run_cli("restart", "--state-file", sc.state_file, "-s", "unix://" + sc.sock, timeout=START + 240)
            self.settle(t, lambda: self.running(sc))
            return f"{res.stdout.strip().splitlines()[-1] if res.stdout.strip() else res.returncode} " \
                f"(took {time.monotonic() - t0:.0f} s)"
        elif event == "model_apply":
            return self.model_apply(sc, plain, t)
        elif event in ("worker_hang", "hang_kill"):
            return self.hang(sc, plain, t, old, event)
        elif event in RENDER:
            return self.recycle(sc, old, event)
        else:
            note = self.apply_change(sc, plain, event)
            self.settle(t, self.new_main(sc, old) if plain else (lambda: self.running(sc)))
            return note
        return ""

    def hang(self, sc: Sidecar, plain: bool, t: Traffic, old: int, event: str) -> str:
        stopped = workers(old)[:1] if event == "worker_hang" else tree(old)
        for p in stopped:
            p.suspend()
        if event == "worker_hang":
            try:  # replaced: the hung worker gone, the tree answering (plain: uvicorn's 60 s health check)
                self.settle(t, lambda: gone(stopped[0]) and self.running(sc), 120 if plain else START)
                return f"worker {stopped[0].pid} replaced alone" if not plain else "uvicorn's ping replaced it"
            except AssertionError:
                stopped[0].resume()
                return "not replaced within 120 s: resumed by hand"
        if plain:
            time.sleep(60)  # plain supervisord has no hang detection: a minute of it
            for p in stopped:
                p.resume()
            self.settle(t, lambda: self.running(sc))
            return "no hang detection: nothing answered until the tree was resumed by hand after 60 s"
        self.settle(t, self.new_main(sc, old))
        return ""

    def recycle(self, sc: Sidecar, main: int, event: str) -> str:
        """RECYCLE_FOR[event] seconds of traffic while workers are replaced one by one; say how many started
        (LiteLLM's own CLI logs none)."""
        offset = os.path.getsize(sc.log_file)  # uvicorn says each worker it starts, whoever forks it
        time.sleep(RECYCLE_FOR[event])  # the traffic runs through the recycling meanwhile (a measurement)
        with open(sc.log_file, errors="replace") as fh:
            fh.seek(offset)
            started = fh.read().count("Started server process [")
        return f"{started} workers started (recycled)"

    def model_apply(self, sc: Sidecar, plain: bool, t: Traffic) -> str:
        with open(sc.profile, "w") as fh:
            fh.write(profile_text(self.tb.upstream, "  extra: qwen/qwen3-coder\n"))
        t0 = time.monotonic()
        if plain:
            run_cli("render", *sc.render_args, env=KEYS)
            with open(os.path.join(sc.out, "sidecar.conf"), "w") as fh:  # keep the plain program
                fh.write(plain_section(sc, self.tb.binary, 2))
            sc.ctl("restart", sc.program, timeout=START + 120)
            note = "render + supervisorctl restart"
        else:
            res = run_cli("apply", *sc.render_args, "-s", "unix://" + sc.sock, env=sc.render_env,
                          timeout=START + 240)
            note = (res.stdout.strip().splitlines() or [f"apply exit {res.returncode}"])[-1]
        self.settle(t, lambda: self.answers(sc, "agentroute-extra"))
        return f"{note} (took {time.monotonic() - t0:.0f} s)"

    def apply_change(self, sc: Sidecar, plain: bool, event: str) -> str:
        count, binary = (3, self.tb.binary) if event == "workers_apply" else (2, self.other)
        if plain:
            run_cli("render", *sc.render_args, env=KEYS)
            with open(os.path.join(sc.out, "sidecar.conf"), "w") as fh:
                fh.write(plain_section(sc, binary, count))
            sc.ctl("update", timeout=START + 120)
            return "render + supervisorctl update"
        args = list(sc.render_args)
        args[args.index("--workers") + 1] = str(count)
        args[args.index("--binary") + 1] = binary
        sc.render_args[:] = args
        t0 = time.monotonic()
        res = run_cli("apply", *args, "-s", "unix://" + sc.sock, env=sc.render_env, timeout=START + 240)
        said = [line for line in res.stdout.splitlines() if "restart" in line or "place" in line]
        return (said[-1] if said else f"apply exit {res.returncode}") + f" (apply took {time.monotonic() - t0:.0f} s)"

    def record(self, event: str, setup: str, t: Traffic, longest: float, quiet: float, peak: float,
               note: str) -> None:
        cut = sum(1 for o in t.stream_outcomes.values() if o != "ok")
        pool = t.pool
        failed = str(t.short["failed"]) + (f" ({pool.reused_failed} on a reused connection)"
                                           if pool is not None and pool.reused_failed else "")
        row = [TITLES[event], setup, str(t.short["refused"]), failed, f"{cut}/{len(t.stream_outcomes)}",
               f"{longest:.1f} s", f"{quiet:.1f} s", f"{peak:.0f} MB", note]
        self.rows.append(row)
        self.tb.log("  " + " | ".join(row))

    def measure_memory(self, sc: Sidecar, setup: str) -> None:
        main = int(sc.info()["pid"])
        poll(lambda: len(tree(main)) >= 3, 120, 0.5, what="the workers")
        self.answers(sc)
        procs = tree(main)
        pss = sum(p.memory_full_info().pss for p in procs) / 2**20
        rss = ", ".join(f"{p.memory_info().rss / 2**20:.0f}" for p in procs)
        listener = self.listener_memory(sc)
        self.memory.append(f"| {setup} | {len(procs)} | {pss:.0f} MB | {rss} MB | {listener} |")
        self.tb.log(f"  memory {setup}: PSS {pss:.0f} MB; RSS {rss} MB; listener {listener}")

    def listener_memory(self, sc: Sidecar) -> str:
        """The health listener's PSS / RSS (supervisord's pid for it), or "none" (plain supervisord has none)."""
        try:
            pid = sc.listener_info()["pid"]
            mem = psutil.Process(pid).memory_full_info()
        except (OSError, xmlrpc.client.Error, psutil.Error, ValueError):
            return "none"
        return f"{mem.pss / 2**20:.0f} MB / {mem.rss / 2**20:.0f} MB"

    def run(self, events: List[str]) -> None:
        for event in events:
            self.tb.log(f"port: {event} ...")
            for plain in (False, True):
                try:
                    self.run_event(event, plain)
                except Exception as e:  # one event's failure must not lose the others' rows
                    self.rows.append([TITLES[event], "plain supervisord (LiteLLM's CLI)" if plain else
                                      "sidecar_plugin", "-", "-", "-", "-", "-", "-", f"bench error: {e}"[:200]])
                    self.tb.log(f"  {event}: bench error: {e}")
                finally:
                    self.tb.close()

    def table(self, applyfile: Optional[str] = None) -> List[str]:
        load = (f"{min(self.loads):.1f} to {max(self.loads):.1f}" if self.loads else "n/a")
        lines = ["## The port never closes, and no wait (real LiteLLM, 2 workers)", "",
                 f"- {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average (1 min) when each event "
                 f"began: {load} on {os.cpu_count()} cores (a shared host: other sessions' tests ran meanwhile)"]
        if applyfile:
            lines.append(f"- {applyfile}")
        lines += ["", "| " + " | ".join(HEADER) + " |", "|" + " --- |" * len(HEADER)]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        lines += ["", "| memory after one request | processes | PSS (tree) | RSS per process | listener PSS / RSS |",
                  "| --- | --- | --- | --- | --- |"] + self.memory
        lines += ["", "Notes:", "",
                  "- Traffic (issue 31's): 5 short `/v1/messages` requests per second over a pool of kept-alive "
                  "connections (reused last-in first-out, as Go's transport does; one closed while idle is "
                  "dropped, one that fails once its request is written is a failure, as Go never retries a "
                  "POST), and a 10 s stream every 2 s, each on its own connection; every request waits up to "
                  "240 s (AgentRoute's gateway sets no timeout). 'failed': error answers and broken exchanges "
                  "(in brackets those on a reused connection); 'refused': connections nobody accepted.",
                  "- 'longest wait': the longest a short request sent after the event began took (to its answer "
                  "or failure); 'same run's quiet window': the same over the 5 s of traffic just before the "
                  "event; issue 31's goal is within 1.5 s of it. The count closes 5 s of answers after the "
                  "event is served again (plain SIGKILL of the main process: 40 s; a worker's SIGKILL: 20 s).",
                  "- 'peak PSS': the summed PSS of every process of the sidecar's trees (the old and the new one "
                  "while they overlap, orphans included), sampled each second from the event to the count's "
                  "close; the listener is not in it.",
                  "- A hung worker: one worker SIGSTOPped (its kept-alive connections stall with it); the "
                  "tree hung: the launcher and its workers SIGSTOPped (plain: resumed by hand after 60 s).",
                  "- 'another install': a second virtualenv with its own `litellm` entry point (the same "
                  "packages): what `--binary` pointing at another install, or a LiteLLM upgrade, costs."]
        return lines


SECTION = "## The port never closes"


def write_section(path: str, lines: List[str]) -> None:
    """Replace this section of RESULTS.md (from its heading to the next one) by ``lines``, atomically."""
    with open(path) as fh:
        old = fh.read()
    start = old.find("\n" + SECTION)
    end = old.find("\n## ", start + 1) if start >= 0 else -1
    new = (old[:start + 1] if start >= 0 else old.rstrip("\n") + "\n\n") + "\n".join(lines) + "\n" + \
        (old[end:] if end >= 0 else "")
    with open(path + ".tmp", "w") as fh:
        fh.write(new)
    os.replace(path + ".tmp", path)


def main() -> int:
    import argparse
    import tempfile

    p = argparse.ArgumentParser()
    p.add_argument("--only", default=",".join(DEFAULT_EVENTS))
    p.add_argument("--write", metavar="RESULTS.md", help="replace this section of that file by the table")
    p.add_argument("--applyfile", help="a line saying which apply the run measured (see RESULTS.md)")
    a = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopped: still clean up the supervisords
    root = tempfile.mkdtemp(prefix="sidecar-port-")
    tb = TrafficBench(root, lambda s: print(s, flush=True))
    pb = PortBench(tb)
    try:
        pb.run(a.only.split(","))
    finally:
        tb.close()
        tb.stop_upstream()
        shutil.rmtree(root, ignore_errors=True)
    lines = pb.table(a.applyfile)
    print("\n".join(lines))
    if a.write:
        write_section(a.write, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
