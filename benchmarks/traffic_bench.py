"""The traffic section of ``make bench``: what the gateway's requests see, side by side with plain supervisord.

The real LiteLLM (the pinned one), a loopback upstream that streams slowly
(tests/support/fake_openrouter.py, 0.1 s per token), a real supervisord. Two setups
run the same LiteLLM command:

- ``sidecar_plugin``: rendered with the defaults (2 workers, 60 s drain,
  the listener);
- ``plain supervisord``: the same ``[program:]`` an operator writes by hand
  (``--num_workers 2``, stopasgroup/killasgroup, supervisord's default
  stopwaitsecs=10, LiteLLM's own GRACEFUL_SHUTDOWN_TIMEOUT=30 s), no listener;
  a config change is applied with ``supervisorctl restart``.

Each scenario runs short requests (5/s) and four streams (5, 10, 20, 40 s),
only to 127.0.0.1, bounded in count and time, and counts refused or failed
requests and cut streams. Overload: one worker, 200 concurrent 15 s streams
plus 60 short requests/s for 30 s; counts hang kills (the sidecar was
answering throughout, so every kill is false).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Callable, List, Optional, Sequence, Tuple

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.join(os.path.dirname(HERE), "tests", "support")
sys.path.insert(0, TESTS)

from harness import KEYS, MASTER_KEY, Sidecar, free_port, poll  # noqa: E402
from traffic import Traffic, wait_answering  # noqa: E402

TIERS = {"heavy": "anthropic/claude-opus-4.5", "fast": "deepseek/deepseek-v4-flash"}
FAST = "agentroute-fast"
STREAMS = (5.0, 10.0, 20.0, 40.0)
Row = Tuple[str, str, str, str]  # scenario, setup, outcome, goal


def litellm_binary() -> str:
    found = shutil.which("litellm") or shutil.which("litellm", path=os.path.dirname(sys.executable))
    if not found:
        raise SystemExit("litellm is not installed (make install installs it)")
    return found


class Upstream:
    """tests/support/fake_openrouter.py in its own process (the load generator must not share its GIL)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, os.path.join(TESTS, "fake_openrouter.py"), "--port",
                                      str(self.port), "--seconds-per-token", "0.1"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)


def profile_text(upstream: Upstream, extra: str = "") -> str:
    return ("name: bench\nmodels:\n" + extra + "".join(f"  {t}: {m}\n" for t, m in TIERS.items())
            + f"api_base: {upstream.base_url}\n")


def plain_section(sc: Sidecar, binary: str, workers: int, extra: Sequence[str] = ()) -> str:
    """What an operator writes by hand for LiteLLM under supervisord: same command (``extra``: more of LiteLLM's
    CLI options), supervisord's defaults."""
    argv = [binary, "--config", os.path.join(sc.out, "litellm.yaml"), "--host", "127.0.0.1", "--port", str(sc.port),
            *extra]
    if workers > 1:
        argv += ["--num_workers", str(workers), "--timeout_worker_healthcheck", "60"]
    return (f"[program:{sc.program}]\ncommand={' '.join(argv)}\ndirectory={sc.out}\n"
            f'environment=LITELLM_LOCAL_MODEL_COST_MAP="True",SIDECAR_PLUGIN_TREE="{sc.marker}"\n'
            "autostart=true\nautorestart=true\nstartsecs=1\nstopasgroup=true\nkillasgroup=true\n"
            f"redirect_stderr=true\nstdout_logfile={sc.log_file}\n")


class TrafficBench:
    def __init__(self, root: str, log: Callable[[str], None]) -> None:
        self.root = root
        self.log = log
        self.binary = litellm_binary()
        self.upstream = Upstream()
        self.made: List[Sidecar] = []
        self.rows: List[Row] = []
        self.notes: List[str] = []

    def close(self) -> None:
        for sc in self.made:
            sc.cleanup()
        self.made = []

    def stop_upstream(self) -> None:
        self.upstream.stop()

    # -- setups --
    def setup(self, plain: bool, workers: int = 2, render: Optional[List[str]] = None,
              plain_extra: Sequence[str] = ()) -> Sidecar:
        folder = tempfile.mkdtemp(dir=self.root)
        args = ["--health-timeout", "120"] + (render or [])
        sc = Sidecar(folder, workers=workers, binary=self.binary, profile_text=profile_text(self.upstream),
                     render_args=args)
        self.made.append(sc)
        if plain:
            with open(os.path.join(sc.out, "sidecar.conf"), "w") as fh:
                fh.write(plain_section(sc, self.binary, workers, plain_extra))
            sc.start_supervisord(wait_state=None)
            poll(lambda: wait_answering(sc.port, MASTER_KEY, FAST, timeout=2) == "ok", 180, 0.5,
                 what="plain LiteLLM answering")
        else:
            sc.start_supervisord(wait_state=None)
            sc.wait_state("running", 180)
            wait_answering(sc.port, MASTER_KEY, FAST, timeout=60)
        return sc

    def traffic(self, sc: Sidecar, rate: float = 5.0, streams=STREAMS) -> Traffic:
        t = Traffic(sc.port, MASTER_KEY, FAST, rate=rate, streams=streams, upstream_stream=True).start()
        poll(lambda: t.short["ok"] >= 2 or rate == 0, 60, 0.1, what="traffic answered")
        return t

    def add(self, scenario: str, setup: str, t: Traffic, goal: str = "", streams_only: bool = False) -> None:
        cut = sum(1 for o in t.stream_outcomes.values() if o != "ok")
        cut_which = ", ".join(f"{s:g} s" for s, o in sorted(t.stream_outcomes.items()) if o != "ok") or "none"
        failed = t.short["refused"] + t.short["failed"]
        total = sum(t.short.values())
        if streams_only:
            outcome = f"streams cut {cut}/{len(t.stream_outcomes)} ({cut_which})"
        else:
            outcome = (f"requests failed {failed}/{total} (refused {t.short['refused']}); "
                       f"streams cut {cut}/{len(t.stream_outcomes)} ({cut_which})")
        met = ""
        if goal == "zero":
            met = "0 failed, 0 cut: " + ("PASS" if failed == 0 and cut == 0 else "MISS")
        elif goal == "drain":
            met = "streams < 60 s complete: " + ("PASS" if cut == 0 else "MISS")
        self.rows.append((scenario, setup, outcome, met))
        self.log(f"  {scenario} / {setup}: {outcome}")

    # -- scenarios --
    def apply(self, plain: bool) -> None:
        name = "plain supervisord (render + supervisorctl restart)" if plain else "sidecar_plugin (apply)"
        sc = self.setup(plain)
        t = self.traffic(sc)
        time.sleep(2)
        with open(sc.profile, "w") as fh:
            fh.write(profile_text(self.upstream, "  extra: qwen/qwen3-coder\n"))
        t0 = time.monotonic()
        if plain:
            from harness import run_cli
            run_cli("render", *sc.render_args, env=KEYS)
            with open(os.path.join(sc.out, "sidecar.conf"), "w") as fh:  # keep the plain program
                fh.write(plain_section(sc, self.binary, 2))
            sc.ctl("restart", sc.program, timeout=300)
            poll(lambda: wait_answering(sc.port, MASTER_KEY, "agentroute-extra", timeout=2) == "ok", 180, 0.5,
                 what="new alias served")
        else:
            res = sc.apply()
            if res.returncode != 0:
                self.notes.append(f"apply failed: {res.stderr.strip()[:300]}")
        took = time.monotonic() - t0
        time.sleep(2)
        t.stop()
        self.add("apply a changed model list", name, t, goal="" if plain else "zero")
        self.notes.append(f"apply took {took:.0f} s ({name})")
        self.close()

    def stop(self, plain: bool) -> None:
        name = "plain supervisord (stopwaitsecs=10)" if plain else "sidecar_plugin (60 s drain)"
        sc = self.setup(plain)
        t = self.traffic(sc, rate=0)
        time.sleep(2)
        t0 = time.monotonic()
        sc.ctl("stop", sc.program, timeout=300)
        took = time.monotonic() - t0
        t.stop()
        self.add("supervisorctl stop", name, t, goal="" if plain else "drain", streams_only=True)
        self.notes.append(f"stop took {took:.0f} s ({name})")
        self.close()

    def worker_kill(self, plain: bool) -> None:
        name = "plain supervisord" if plain else "sidecar_plugin"
        sc = self.setup(plain)
        t = self.traffic(sc, streams=())
        time.sleep(2)
        main = sc.info()["pid"]
        workers = [c for c in psutil.Process(main).children() if "resource_tracker" not in " ".join(c.cmdline())]
        workers[0].kill()
        time.sleep(20)
        t.stop()
        self.add("SIGKILL of one worker (short requests)", name, t, goal="" if plain else "zero")
        self.close()

    def parent_kill(self, plain: bool) -> None:
        name = "plain supervisord" if plain else "sidecar_plugin"
        sc = self.setup(plain)
        t = self.traffic(sc, streams=())
        time.sleep(2)
        main = sc.info()["pid"]
        os.kill(main, signal.SIGKILL)
        time.sleep(40)
        t.stop()
        state = ""
        if plain:
            info = sc.info()
            state = f"; after 40 s supervisord says {info['statename']}; nothing reaps the old workers"
        self.add("SIGKILL of LiteLLM's parent (short requests)", name, t)
        if state:
            self.rows[-1] = self.rows[-1][:2] + (self.rows[-1][2] + state, "")
        self.close()

    def overload(self) -> None:
        """One worker, 200 concurrent 15 s streams + 60 short requests/s for 30 s: count hang kills."""
        sc = self.setup(False, workers=1)
        t = Traffic(sc.port, MASTER_KEY, FAST, rate=60, streams=tuple(15.0 + i / 1000 for i in range(200)),
                    max_requests=1800, upstream_stream=True).start()
        deadline = time.monotonic() + 30
        latencies: List[float] = []
        while time.monotonic() < deadline:
            time.sleep(0.5)
            try:
                health = sc.state().raw.get("health") or {}
            except Exception:
                continue
            if health.get("ok") and health.get("latency_ms"):
                latencies.append(float(health["latency_ms"]) / 1000.0)
        t.stop(wait_streams=120)
        hist = [h for h in sc.history() if h.get("state") == "crashed"]
        kills = len(hist)
        errors = "; ".join(sorted({str(h.get("error")) for h in hist}))
        outcome = (f"hang kills {kills} in 30 s = {kills * 2} per minute; short requests answered "
                   f"{t.short['ok']}/{sum(t.short.values())}; streams complete "
                   f"{sum(1 for o in t.stream_outcomes.values() if o == 'ok')}/{len(t.stream_outcomes)}"
                   + (f"; health answers took up to {max(latencies):.1f} s" if latencies else "")
                   + (f"; why: {errors}" if errors else ""))
        self.rows.append(("overload (1 worker)", "sidecar_plugin", outcome,
                          "0 false kills: " + ("PASS" if kills == 0 else "MISS")))
        self.rows.append(("overload (1 worker)", "plain supervisord", "no hang detection: 0 kills, "
                          "and a hung LiteLLM is never restarted", ""))
        self.log(f"  overload: {outcome}")
        self.close()

    def run(self, scenarios: List[str]) -> None:
        for name in scenarios:
            self.log(f"traffic: {name} ...")
            if name == "overload":
                self.overload()
                continue
            for plain in (False, True):
                try:
                    getattr(self, name)(plain)
                finally:
                    self.close()

    def table(self) -> List[str]:
        lines = ["## What the gateway's requests see (real LiteLLM)", "",
                 "| scenario | setup | requests failed / streams cut | goal |", "| --- | --- | --- | --- |"]
        lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in self.rows]
        lines += ["", "Traffic notes:", ""]
        lines += [f"- {n}" for n in self.notes]
        lines += [
            "- Traffic: 5 short `/v1/messages` requests per second and four streams of 5, 10, 20 and 40 s "
            "(a loopback upstream streaming 0.1 s per token), each request on its own connection; "
            "'failed' counts refused connections and error answers, 'cut' a stream that ended without "
            "`message_stop`.",
            "- Both setups run the same LiteLLM command with 2 workers; plain supervisord has supervisord's "
            "default stopwaitsecs (10 s) and LiteLLM's default GRACEFUL_SHUTDOWN_TIMEOUT (30 s).",
            "- SIGKILL of one worker: a stream on the killed worker is lost with it whatever supervises it, so "
            "that scenario sends short requests only.",
        ]
        return lines


def main() -> int:
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--only", default="apply,stop,worker_kill,parent_kill,overload")
    a = p.parse_args()
    root = tempfile.mkdtemp(prefix="sidecar-traffic-")
    tb = TrafficBench(root, lambda s: print(s, flush=True))
    try:
        tb.run(a.only.split(","))
    finally:
        tb.close()
        tb.stop_upstream()
    print("\n".join(tb.table()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
