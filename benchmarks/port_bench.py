"""The port-never-closes section of ``make bench``: every supervision event under traffic, real LiteLLM.

Two setups run the pinned LiteLLM with 2 workers under a real supervisord
(see traffic_bench.py): ``sidecar_plugin`` as rendered (supervisord owns the
port, the launcher serves LiteLLM's app on it, the listener) and ``plain
supervisord`` running LiteLLM's own CLI as an operator writes it. Each event
runs under 5 short requests per second and one 10 s stream (the loopback
upstream streams 0.1 s per token); every request opens its own connection and
waits as long as a start can take (240 s), as AgentRoute's gateway does (no
timeout, no retry). Counted: refused connections, failed answers, cut streams,
and the longest a short request waited. Then the memory of each setup.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import xmlrpc.client
from typing import Callable, List, Tuple

import psutil

from traffic_bench import FAST, TrafficBench, plain_section  # first: it puts tests/ on the path

from harness import KEYS, MASTER_KEY, Sidecar, poll, run_cli  # noqa: E402
from traffic import Traffic  # noqa: E402

START = 240.0  # the longest a start of the real LiteLLM may take on a loaded 2-core host
SETTLE = 5.0  # seconds of answers after an event has been served again, before the count closes
Row = Tuple[str, str, str, str, str, str, str]

EVENTS = ("main_kill", "worker_kill", "restart", "stop_start", "hang_kill", "workers_apply", "binary_apply")
TITLES = {
    "main_kill": "SIGKILL of the main process",
    "worker_kill": "SIGKILL of a worker (short requests)",
    "restart": "supervisorctl restart",
    "stop_start": "stop + start",
    "hang_kill": "hang (tree SIGSTOPped) -> killed, replaced",
    "workers_apply": "apply --workers 2 -> 3",
    "binary_apply": "apply --binary naming another install",
}


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


class PortBench:
    def __init__(self, tb: TrafficBench) -> None:
        self.tb = tb
        self.rows: List[Row] = []
        self.memory: List[str] = []
        self.other = other_install(os.path.join(tb.root, "other-litellm"), tb.binary)

    def flowing(self, sc: Sidecar, streams=(10.0,)) -> Traffic:
        t = Traffic(sc.port, MASTER_KEY, FAST, rate=5, streams=streams, upstream_stream=True)
        t.timeout = START
        t.start()
        poll(lambda: t.short["ok"] >= 5, 120, 0.1, what="traffic answered")
        return t

    def settle(self, sc: Sidecar, t: Traffic, served: Callable[[], bool]) -> None:
        """Wait until the event is over (``served``), then SETTLE seconds of answers (bounded)."""
        poll(served, START, 0.5, what="served again")
        base = t.short["ok"]
        poll(lambda: t.short["ok"] >= base + int(SETTLE * 5), START, 0.2, what="answers after the event")

    def main_pid(self, sc: Sidecar) -> int:
        return int(sc.info()["pid"])

    def new_main(self, sc: Sidecar, old: int) -> Callable[[], bool]:
        def ok() -> bool:
            try:
                info = sc.info()
            except Exception:
                return False
            return info["statename"] == "RUNNING" and info["pid"] not in (0, old) and self.answers(sc)
        return ok

    def answers(self, sc: Sidecar) -> bool:
        from traffic import one_request

        return one_request(sc.port, MASTER_KEY, FAST, timeout=START) == "ok"

    def record(self, event: str, setup: str, t: Traffic, note: str = "") -> None:
        cut = sum(1 for o in t.stream_outcomes.values() if o != "ok")
        if t.short["pending"]:  # unanswered when the count closed: their wait so far is in the longest
            note = "; ".join(x for x in (note, f"{t.short['pending']} still waiting when the count closed") if x)
        row = (TITLES[event], setup, str(t.short["refused"]), str(t.short["failed"]),
               f"{cut}/{len(t.stream_outcomes)}", f"{t.longest:.1f} s", note)
        self.rows.append(row)
        self.tb.log("  " + " | ".join(row))

    # -- the events --
    def run_event(self, event: str, plain: bool) -> None:
        setup = "plain supervisord (LiteLLM's CLI)" if plain else "sidecar_plugin"
        sc = self.tb.setup(plain)
        if event == "main_kill":
            self.measure_memory(sc, setup)
        streams = () if event == "worker_kill" else (10.0,)
        old = self.main_pid(sc)
        note = ""
        if event == "hang_kill":
            for p in tree(old):
                p.suspend()
            t = self.flowing_after_hang(sc, plain)
            if plain:
                time.sleep(60)  # plain supervisord has no hang detection: a minute of it
                note = "no hang detection: nothing answered until the tree was resumed by hand"
                for p in tree(old):
                    p.resume()
            else:
                self.settle(sc, t, self.new_main(sc, old))
            t.stop(wait_streams=START)
            self.record(event, setup, t, note)
            return
        t = self.flowing(sc, streams)
        time.sleep(2)
        if event == "main_kill":
            os.kill(old, signal.SIGKILL)
            if plain:
                time.sleep(40)
                note = f"after 40 s supervisord says {sc.info()['statename']}; the old workers still hold the port"
            else:
                self.settle(sc, t, self.new_main(sc, old))
        elif event == "worker_kill":
            victim = [c for c in psutil.Process(old).children()
                      if "resource_tracker" not in " ".join(c.cmdline())][0]
            victim.kill()
            time.sleep(20)
        elif event == "restart":
            sc.ctl("restart", sc.program, timeout=START + 120)
            self.settle(sc, t, self.new_main(sc, old))
        elif event == "stop_start":
            if plain:
                sc.ctl("stop", sc.program, timeout=START)
                sc.ctl("start", sc.program, timeout=START)
            else:
                for verb in ("stop", "start"):
                    run_cli(verb, "--state-file", sc.state_file, "-s", "unix://" + sc.sock, timeout=START + 120)
            self.settle(sc, t, self.new_main(sc, old))
        else:
            note = self.apply_change(sc, plain, event)
            self.settle(sc, t, self.new_main(sc, old))
        t.stop(wait_streams=START)
        self.record(event, setup, t, note)

    def flowing_after_hang(self, sc: Sidecar, plain: bool) -> Traffic:
        """Traffic that arrives while LiteLLM hangs (the hang itself is not counted: nothing was in flight)."""
        t = Traffic(sc.port, MASTER_KEY, FAST, rate=5, streams=(10.0,), upstream_stream=True)
        t.timeout = 60.0 if plain else START
        return t.start()

    def apply_change(self, sc: Sidecar, plain: bool, event: str) -> str:
        workers, binary = (3, self.tb.binary) if event == "workers_apply" else (2, self.other)
        if plain:
            run_cli("render", *sc.render_args, env=KEYS)
            with open(os.path.join(sc.out, "sidecar.conf"), "w") as fh:
                fh.write(plain_section(sc, binary, workers))
            sc.ctl("update", timeout=START + 120)
            return "render + supervisorctl update"
        args = list(sc.render_args)
        args[args.index("--workers") + 1] = str(workers)
        args[args.index("--binary") + 1] = binary
        sc.render_args[:] = args
        t0 = time.monotonic()
        res = run_cli("apply", *args, "-s", "unix://" + sc.sock, env=sc.render_env, timeout=START + 240)
        said = [line for line in res.stdout.splitlines() if "needs a restart" in line]
        return (said[0].split(": ", 1)[-1] if said else f"apply exit {res.returncode}") + \
            f" (apply took {time.monotonic() - t0:.0f} s)"

    def measure_memory(self, sc: Sidecar, setup: str) -> None:
        main = self.main_pid(sc)
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
                finally:
                    self.tb.close()

    def table(self) -> List[str]:
        lines = ["## The port never closes (real LiteLLM, 2 workers)", "",
                 "| event | setup | refused | failed | streams cut | longest wait | note |",
                 "| --- | --- | --- | --- | --- | --- | --- |"]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        lines += ["", "| memory after one request | processes | PSS (tree) | RSS per process | listener PSS / RSS |",
                  "| --- | --- | --- | --- | --- |"] + self.memory
        lines += ["", "Notes:", "",
                  "- Traffic: 5 short `/v1/messages` requests per second (each on its own connection, waiting up "
                  "to 240 s: AgentRoute's gateway sets no timeout and never retries) and one 10 s stream; "
                  "'failed' counts error answers and broken exchanges, 'refused' connections nobody accepted.",
                  "- Hang: the whole LiteLLM tree is SIGSTOPped, then the traffic starts (requests that arrive "
                  "while it hangs); the plain setup gets a 60 s client timeout there, since nothing ends the hang.",
                  "- 'another install': a second virtualenv with its own `litellm` entry point (the same "
                  "packages): what `--binary` pointing at another install, or a LiteLLM upgrade, costs.",
                  "- An event's count closes 5 s of answers after the sidecar serves again (SIGKILL of a worker: "
                  "20 s; plain SIGKILL of the main process: 40 s)."]
        return lines


def main() -> int:
    import argparse
    import tempfile

    p = argparse.ArgumentParser()
    p.add_argument("--only", default=",".join(EVENTS))
    a = p.parse_args()
    root = tempfile.mkdtemp(prefix="sidecar-port-")
    tb = TrafficBench(root, lambda s: print(s, flush=True))
    pb = PortBench(tb)
    try:
        pb.run(a.only.split(","))
    finally:
        tb.close()
        tb.stop_upstream()
        shutil.rmtree(root, ignore_errors=True)
    print("\n".join(pb.table()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
