#!/usr/bin/env python3
"""Chaos: random faults against a real supervisord, the listener and the stand-in (2 workers).

Three faults are recovered from without a person (no start is asked by this
script): ``slow_boot`` (a boot longer than the health timeout), ``fatal``
(starts fail until supervisord gives up) and ``foreign_health`` (another
server answers /health/liveliness on the port: never ``running`` meanwhile).

Seeded and reproducible (the seed is printed). After each fault the system is
given time to settle and the invariants are checked; a sampler thread checks
the state file and the health endpoint every 50 ms all along. Prints a table:
faults by kind, invariant checks, violations (must be 0).

    python tests/support/chaos.py --faults 200 [--seed N]      (make chaos)
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Dict, List, Optional

import psutil
import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import Sidecar, poll  # noqa: E402
from sidecar_plugin.core.state.schema import StateMissing, StateUnavailable  # noqa: E402
from sidecar_plugin.shell.files.statefile import read_history, read_state  # noqa: E402

DETECTION_BOUND = 6.0  # hang detection (~4 s by default) plus slack
SETTLE = 40.0
FAULTS = ["kill_parent", "kill_worker", "kill_listener", "kill_supervisord", "sigstop",
          "ctl_race", "foreign_port", "readonly", "slow_boot", "fatal", "foreign_health"]
WEIGHTS = [5, 3, 3, 1, 2, 2, 1, 1, 2, 2, 1]
HEALTH_TIMEOUT = 5.0
# the listener's retries, short for the run: 1 s doubling to 4 s
RENDER_ARGS = ["--health-timeout", f"{HEALTH_TIMEOUT:g}", "--retry-delay", "1", "--retry-max-delay", "4",
               "--stop-timeout", "5"]  # faults, not drains: a stopped sidecar must not hold a stop for 65 s
ORPHANS_DRAIN = 10.0  # seconds an idle orphan of a killed tree may take to drain once the new tree runs

HEALTH_SERVER = (
    "import sys\n"
    "from http.server import BaseHTTPRequestHandler, HTTPServer\n"
    "class H(BaseHTTPRequestHandler):\n"
    "    def log_message(self, *a): pass\n"
    "    def do_GET(self):\n"
    "        self.send_response(200); self.send_header('Content-Length', '2'); self.end_headers()\n"
    "        self.wfile.write(b'ok')\n"
    "s = HTTPServer(('127.0.0.1', int(sys.argv[1])), H)\n"
    "print('up', flush=True)\n"
    "s.serve_forever()\n")


class Sampler(threading.Thread):
    """Read the state file and probe the sidecar every 50 ms; record what it sees."""

    def __init__(self, sc: Sidecar) -> None:
        super().__init__(daemon=True)
        self.sc = sc
        self.stop_flag = threading.Event()
        self.reads = 0
        self.invalid: List[str] = []
        self.running_unhealthy: List[str] = []
        self.seen: List[str] = []
        self.unhealthy_since: Optional[float] = None
        self.foreign_pid: Optional[int] = None  # a foreign server holds the port: running is a lie
        self.foreign_running: List[str] = []
        self.session = requests.Session()
        self.session.trust_env = False

    def healthy(self) -> bool:
        try:
            return self.session.get(f"http://127.0.0.1:{self.sc.port}/health/liveliness", timeout=0.3).status_code == 200
        except requests.RequestException:
            return False

    def run(self) -> None:
        while not self.stop_flag.wait(0.05):
            try:
                st = read_state(self.sc.state_file)
            except StateMissing:
                continue
            except StateUnavailable as exc:
                self.invalid.append(str(exc))
                continue
            self.reads += 1
            if not self.seen or self.seen[-1] != st.state.value:
                self.seen.append(st.state.value)
            shown_running = st.state.value == "running" and not st.is_stale
            foreign = self.foreign_pid
            if shown_running and foreign is not None and _alive(foreign) and foreign in self.sc.port_listeners():
                self.foreign_running.append(f"running shown while pid {foreign} (foreign) holds the port")
            if shown_running and not self.healthy():
                now = time.monotonic()
                self.unhealthy_since = self.unhealthy_since or now
                if now - self.unhealthy_since > DETECTION_BOUND:
                    self.running_unhealthy.append(f"running shown while not answering for "
                                                  f"{now - self.unhealthy_since:.1f} s (pid {st.pid})")
                    self.unhealthy_since = now
            else:
                self.unhealthy_since = None


class Chaos:
    def __init__(self, folder: str, seed: int, log: Callable[[str], None] = print) -> None:
        self.rng = random.Random(seed)
        self.log = log
        self.sc = Sidecar(folder, workers=2, render_args=RENDER_ARGS)
        self.faults: Dict[str, int] = collections.Counter()
        self.checks = 0
        self.violations: List[str] = []
        self.sampler = Sampler(self.sc)
        self.expected_listener_kills = 0
        self.beside = False  # the last foreign fault restarted supervisord beside the foreign server
        self.started_beside = 0  # foreign faults that did so (the default render: each of them)

    # -- helpers --
    def check(self, ok: bool, what: str) -> None:
        self.checks += 1
        if not ok:
            self.violations.append(what)
            self.log(f"  VIOLATION: {what}")

    def info(self) -> Dict[str, Any]:
        return self.sc.info()

    def field(self, name: str, default: Any = None) -> Any:
        st = self.sc.state()
        return default if st is None else getattr(st, name)

    def settle(self, want: str = "running") -> bool:
        """Wait until supervisord and the state file agree (running and healthy, or stopped)."""
        def agreed() -> bool:
            try:
                info = self.info()
            except Exception:
                return False
            st = self.sc.state()
            if st is None or st.is_stale:
                return False
            if want == "running":
                return (info["statename"] == "RUNNING" and st.state.value == "running"
                        and st.pid == info["pid"] and _alive(info["pid"]) and self.sampler.healthy())
            return info["statename"] in ("STOPPED", "FATAL", "EXITED") and st.state.value in ("stopped", "crashed") \
                and st.supervisor_state == info["statename"]
        try:
            poll(agreed, SETTLE, interval=0.05, what=f"settled {want}")
            return True
        except AssertionError:
            return False

    def ensure_running(self) -> None:
        try:
            if self.info()["statename"] != "RUNNING":
                self.sc.rpc().supervisor.startProcess(self.sc.program, False)
        except Exception:
            pass
        self.check(self.settle("running"), "did not settle back to running")

    def tree_ok(self) -> None:
        """Exactly one sidecar tree (supervisord's), or none when stopped; no orphan."""
        # What may only grow (a worker forked a moment ago) is read before the tree it must lie in.
        marked = {p.pid for p in self.sc.marked()}
        held = set(self.sc.port_listeners())
        info = self.info()
        if info["statename"] in ("RUNNING", "STARTING") and info["pid"]:
            try:
                tree = {info["pid"]} | {p.pid for p in psutil.Process(info["pid"]).children(recursive=True)}
            except psutil.Error:
                tree = set()
            # orphans of a killed tree serve until the live one does, then drain (supervisord owns the port):
            # they must be gone within the drain of an idle worker
            try:
                poll(lambda: not {pid for pid in marked - tree if _alive(pid)}, ORPHANS_DRAIN, interval=0.05,
                     what="the orphans to drain")
            except AssertionError:
                pass
            stray = {pid for pid in marked - tree if _alive(pid)}
            self.check(not stray, f"orphans outside the live tree: {_who(stray)}")
            outside = {pid for pid in held - tree if _alive(pid)}
            self.check(not outside, f"the port is held outside the live tree of pid {info['pid']}: {_who(outside)}")
        else:
            self.check(not marked, f"processes left while {info['statename']}: {sorted(marked)}")

    # -- faults --
    def kill_parent(self) -> None:
        pid = self.info()["pid"]
        os.kill(pid, signal.SIGKILL)
        poll(lambda: not _alive(pid), 5, interval=0.005, what="the parent to die")
        self.ensure_running()

    def kill_worker(self) -> None:
        kids = psutil.Process(self.info()["pid"]).children()
        if kids:
            victim = self.rng.choice(kids)
            victim.kill()
            poll(lambda: not _alive(victim.pid), 5, interval=0.005, what="the worker to die")
        self.ensure_running()

    def kill_listener(self) -> None:
        name = f"{self.sc.program}-health"
        old = self.sc.rpc().supervisor.getProcessInfo(f"{name}:{name}")["pid"]
        os.kill(old, signal.SIGKILL)
        self.expected_listener_kills += 1
        poll(lambda: self.field("listener_pid") not in (None, old) and self.sc.listener_info()["statename"] == "RUNNING",
             20, what="a new listener writing the state")
        self.ensure_running()

    def kill_supervisord(self) -> None:
        assert self.sc.proc is not None
        os.kill(self.sc.proc.pid, signal.SIGKILL)
        self.sc.proc.wait(10)
        self.sc.start_supervisord(wait_state=None)
        self.ensure_running()

    def sigstop(self) -> None:
        pid = self.info()["pid"]
        pgid = os.getpgid(pid)
        os.killpg(pgid, signal.SIGSTOP)
        pause = self.rng.uniform(0.5, 7.0)
        time.sleep(pause)  # the fault's duration, not synchronisation
        try:
            os.killpg(pgid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        self.ensure_running()

    def ctl_race(self) -> None:
        cmds = [self.rng.choice(["stop", "start", "restart"]) for _ in range(3)]
        procs = [subprocess.Popen([sys.executable, "-m", "supervisor.supervisorctl", "-c", self.sc.conf, c,
                                   self.sc.program], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for c in cmds]
        for p in procs:
            p.wait(60)
        state = self.info()["statename"]
        if state in ("STOPPED", "EXITED", "FATAL"):
            self.check(self.settle("stopped"), f"did not settle stopped after {cmds}")
            self.tree_ok()
        self.ensure_running()

    def _foreign_on_the_port(self, argv: List[str]) -> subprocess.Popen:
        """Stop the sidecar and start ``argv`` (a foreign server) on its port.

        When supervisord owns the port ([fcgi-program], the default render) a stopped sidecar's port is
        not for the taking: checked, then supervisord is shut down and started again while the foreign
        server holds the address (an operator's restart of supervisord, another server quicker to bind),
        so supervisord starts the sidecar beside it. Where LiteLLM owns the port, the stop frees it."""
        self.sc.rpc().supervisor.stopProcess(self.sc.program, True)
        self.check(self.settle("stopped"), "did not settle stopped before the foreign start")
        foreign = subprocess.Popen(argv, stdout=subprocess.PIPE, start_new_session=True)
        assert foreign.stdout is not None
        self.beside = False
        if foreign.stdout.readline().strip() == b"up":
            return foreign
        foreign.wait(10)
        self.check(self.sc.supervisord_listens(), "a foreign server could not bind, yet supervisord does not hold the port")
        self.sc.rpc().supervisor.shutdown()
        assert self.sc.proc is not None
        self.sc.proc.wait(60)
        foreign = subprocess.Popen(argv, stdout=subprocess.PIPE, start_new_session=True)
        assert foreign.stdout is not None
        self.check(foreign.stdout.readline().strip() == b"up", "the foreign server could not bind with supervisord down")
        self.sc.start_supervisord(wait_state=None)  # autostart: the sidecar starts beside the foreign server
        self.beside = True
        self.started_beside += 1
        return foreign

    def foreign_port(self) -> None:
        foreign = self._foreign_on_the_port([sys.executable, "-c", (
            "import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1);"
            f"s.bind(('127.0.0.1', {self.sc.port})); s.listen(); print('up', flush=True); time.sleep(600)")])
        try:
            try:
                self.sc.rpc().supervisor.startProcess(self.sc.program, False)
            except Exception:
                pass
            try:
                poll(lambda: (lambda s: s is not None and s.state.value == "crashed" and
                              "held by another process" in (s.error or ""))(self.sc.state()), 30,
                     what="crashed naming the foreign holder")
                said = True
            except AssertionError:
                said = False
            self.check(said, "the state did not say the port is held by another process")
            self.check(foreign.poll() is None, "the foreign process on the port was killed")
        finally:
            if foreign.poll() is None:
                os.killpg(foreign.pid, signal.SIGKILL)
            foreign.wait(10)
        poll(lambda: self.info()["statename"] in ("FATAL", "BACKOFF", "RUNNING", "STARTING"), 30, what="sidecar state")
        if self.info()["statename"] == "FATAL":
            self.sc.rpc().supervisor.startProcess(self.sc.program, False)
        self.ensure_running()
        self.check(self.sc.supervisord_listens() or "--port-owner sidecar" in " ".join(self.sc.render_args),
                   "supervisord does not hold the port again once the foreign server left")

    def no_person(self, what: str) -> None:
        """It must come back by itself: this script asks supervisord for nothing."""
        self.check(self.settle("running"), f"{what}: did not come back without a person")

    def slow_boot(self) -> None:
        """The next boot takes longer than the health timeout; the one after is fast."""
        self.sc.set_mode({"start_delay": HEALTH_TIMEOUT + 2, "slow_starts": 1})
        pid = self.info()["pid"]
        os.kill(pid, signal.SIGKILL)  # supervisord restarts it: the slow boot
        try:
            poll(lambda: (lambda s: s is not None and s.state.value == "crashed"
                          and (s.raw.get("retry") or {}).get("attempt", 0) >= 1)(self.sc.state()),
                 HEALTH_TIMEOUT + 55, what="crashed with a retry scheduled")  # supervisord may retry first
        except AssertionError as exc:
            self.check(False, f"slow_boot: {exc}")
        self.no_person("slow_boot")
        self.sc.set_mode({})

    def fatal(self) -> None:
        """Starts fail until supervisord gives up (FATAL); then the fault goes away.

        First as a LiteLLM that exits at start. supervisord counts a spawn as started once it lived
        ``startsecs`` (1 s): on a starved host such a spawn can outlive it (it says RUNNING, then exits), and
        FATAL never comes. That injection missed (supervisord's log shows such a spawn), and is made again in a
        form no load can defeat: the binary not executable, which supervisord refuses before it forks (a spawn
        error, BACKOFF, then FATAL); the binary is made executable again once FATAL is seen. A run that reaches
        no FATAL otherwise is a violation. (Three tries of the first form were all defeated on a loaded CI host.)
        """
        log = os.path.join(self.sc.dir, "supervisord.log")
        binary = self.sc.render_args[self.sc.render_args.index("--binary") + 1]
        for form in ("exits at start", "not executable"):
            since, read_from = time.time(), os.path.getsize(log)
            if form == "exits at start":
                self.sc.set_mode({"fail_starts": 4})  # startretries=3: four failed spawns make FATAL
            else:
                os.chmod(binary, 0o644)
            try:
                os.kill(self.info()["pid"], signal.SIGKILL)
                poll(lambda: (lambda s: s is not None and s.state.value == "crashed" and s.supervisor_state == "FATAL"
                              and (s.raw.get("retry") or {}).get("next_at"))(self.sc.state()),
                     40, interval=0.02, what="crashed (FATAL) with a retry scheduled")
                break
            except AssertionError as exc:
                if any(h.get("supervisor_state") == "FATAL" for h in self.sc.history()
                       if h.get("at", 0) >= since):  # the retry may have been quick: it must have happened
                    break
                with open(log) as fh:
                    fh.seek(read_from)
                    said = fh.read()
                # a failing spawn supervisord counted started: "entered RUNNING", then it exited with its error
                outlived = re.search(r"success: %s entered RUNNING[^\n]*\n(?:.*\n)*?.*exited: %s \(exit status 1;"
                                     % ((re.escape(self.sc.program),) * 2), said)
                if outlived is None or form == "not executable":
                    self.check(False, f"fatal ({form}): {exc}")
                    break
                self.log("  fatal: a failing spawn outlived startsecs (a starved host): injected again, "
                         "the binary not executable")
                self.sc.set_mode({})
                self.ensure_running()
            finally:
                os.chmod(binary, 0o755)  # the fault goes away
                self.sc.set_mode({})
        self.no_person("fatal")

    def foreign_health(self) -> None:
        """Another server answers /health/liveliness on the port while the sidecar cannot bind."""
        foreign = self._foreign_on_the_port([sys.executable, "-c", HEALTH_SERVER, str(self.sc.port)])
        try:
            self.sampler.foreign_pid = foreign.pid
            try:
                self.sc.rpc().supervisor.startProcess(self.sc.program, False)
            except Exception:
                pass  # supervisord started it already (autostart, after its own restart)
            # LiteLLM's port: held until supervisord gave up and the listener retried. supervisord's port (it
            # was restarted beside the foreign server): supervisord itself starts it again and again.
            # Never running all along (the sampler).
            retried = not self.beside
            try:
                poll(lambda: (lambda s: s is not None and f"pid {foreign.pid}" in (s.raw.get("port_holder") or "")
                              and (not retried or (s.raw.get("retry") or {}).get("attempt", 0) >= 1))(self.sc.state()),
                     40, what="the state naming the foreign holder" + (", with a retry" if retried else ""))
                named = True
            except AssertionError:
                named = False
            self.check(named, "the state did not name the foreign holder of the port")
            st = self.sc.state()
            self.check(st is not None and st.state.value != "running", "a foreign health server read as running")
            self.check(foreign.poll() is None, "the foreign server was killed")
        finally:
            self.sampler.foreign_pid = None
            if foreign.poll() is None:
                os.killpg(foreign.pid, signal.SIGKILL)
            foreign.wait(10)
        self.no_person("foreign_health")

    def readonly(self) -> None:
        folder = self.sc.out
        locked = _lock_folder(folder)
        try:
            time.sleep(self.rng.uniform(1.0, 6.0))  # the fault's duration
        finally:
            _unlock_folder(folder, locked)
        before = self.field("heartbeat_at", 0)
        poll(lambda: self.field("heartbeat_at", 0) > before, 10, what="writes to resume")
        self.ensure_running()

    # -- the run --
    def schedule(self, count: int) -> List[str]:
        """The run's faults: every kind that may be drawn once (when ``count`` allows), the rest by weight;
        the seed orders them. A draw by weight alone missed some kind in most short runs."""
        kinds = [k for k, w in zip(FAULTS, WEIGHTS) if w > 0]
        plan = kinds[:count] + self.rng.choices(FAULTS, WEIGHTS, k=max(0, count - len(kinds)))
        self.rng.shuffle(plan)
        return plan

    def run(self, count: int) -> bool:
        self.sc.start_supervisord(wait_state="running", timeout=30)
        self.sampler.start()
        try:
            for i, kind in enumerate(self.schedule(count)):
                self.faults[kind] += 1
                t0 = time.monotonic()
                try:
                    getattr(self, kind)()
                except AssertionError as exc:
                    self.check(False, f"{kind}: {exc}")
                    self.ensure_running()
                self.tree_ok()
                self.log(f"[{i + 1}/{count}] {kind:<16} {time.monotonic() - t0:5.1f} s")
            self.final_checks()
        finally:
            self.sampler.stop_flag.set()
            self.sampler.join(5)
        return not self.violations

    def final_checks(self) -> None:
        self.checks += self.sampler.reads
        for what in self.sampler.invalid:
            self.check(False, f"invalid state file: {what}")
        for what in self.sampler.running_unhealthy + self.sampler.foreign_running:
            self.check(False, what)
        history = read_history(self.sc.state_file)
        chain_ok = all(a["state"] == b["from"] for a, b in zip(history, history[1:]))
        self.check(chain_ok, "history.jsonl: a transition is missing or out of order")
        states = [h["state"] for h in history]
        it = iter(states)
        self.check(all(s in it for s in self.sampler.seen[1:]), "a state seen in the file is not in the history")
        listener_log = open(os.path.join(self.sc.out, "listener.log"), errors="replace").read()
        self.check("Traceback" not in listener_log, "the listener logged a traceback")
        sup_log = open(os.path.join(self.sc.dir, "supervisord.log"), errors="replace").read()
        died = [line for line in sup_log.splitlines() if "agentroute-sidecar-health" in line and "exited:" in line
                and "SIGKILL" not in line and "SIGTERM" not in line]
        self.check(not died, f"the listener exited by itself: {died[:3]}")

    def table(self, seed: int) -> str:
        lines = [f"chaos: seed {seed}", "", "| fault | injected |", "| --- | --- |"]
        for kind in FAULTS:
            lines.append(f"| {kind} | {self.faults.get(kind, 0)} |")
        lines += [f"| **total** | {sum(self.faults.values())} |", "",
                  f"invariant checks run: {self.checks} (of which state-file samples: {self.sampler.reads})",
                  f"violations: {len(self.violations)}"]
        lines += [f"  - {v}" for v in self.violations[:20]]
        return "\n".join(lines)


def _who(pids: Any) -> str:
    """Describe processes for a violation: pid, parent, age, command."""
    said = []
    for pid in sorted(pids):
        try:
            p = psutil.Process(pid)
            said.append(f"pid {pid} (parent {p.ppid()}, {time.time() - p.create_time():.1f} s old, "
                        f"{' '.join(p.cmdline())[:80]})")
        except psutil.Error:
            said.append(f"pid {pid} (gone)")
    return "; ".join(said)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _lock_folder(folder: str) -> str:
    """Make the state folder unwritable, even for root (immutable attribute)."""
    if os.geteuid() == 0 and shutil.which("chattr"):
        if subprocess.run(["chattr", "+i", folder], capture_output=True).returncode == 0:
            return "chattr"
    os.chmod(folder, 0o555)
    return "chmod"


def _unlock_folder(folder: str, how: str) -> None:
    if how == "chattr":
        subprocess.run(["chattr", "-i", folder], capture_output=True)
    else:
        os.chmod(folder, 0o755)


def run_chaos(folder: str, faults: int, seed: int, log: Callable[[str], None] = print) -> Chaos:
    chaos = Chaos(folder, seed, log)
    try:
        chaos.run(faults)
    finally:
        _unlock_folder(chaos.sc.out, "chattr" if os.geteuid() == 0 and shutil.which("chattr") else "chmod")
        chaos.sc.cleanup()
    return chaos


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--faults", type=int, default=200)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--only", default="", help="comma-separated fault kinds to draw from (default: all)")
    a = p.parse_args()
    if a.only:
        kinds = a.only.split(",")
        unknown = [k for k in kinds if k not in FAULTS]
        if unknown:
            p.error(f"unknown fault kind(s): {', '.join(unknown)}")
        for i, kind in enumerate(FAULTS):
            if kind not in kinds:
                WEIGHTS[i] = 0
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1, 10**6)
    print(f"chaos: seed {seed} (reproduce with --seed {seed}), {a.faults} faults", flush=True)
    folder = tempfile.mkdtemp(prefix="sidecar-chaos-")
    t0 = time.monotonic()
    chaos = run_chaos(folder, a.faults, seed, lambda s: print(s, flush=True))
    print()
    print(chaos.table(seed))
    print(f"\nduration: {time.monotonic() - t0:.0f} s")
    if not chaos.violations:
        shutil.rmtree(folder, ignore_errors=True)
    else:
        print(f"kept for inspection: {folder}")
    return 0 if not chaos.violations else 1


if __name__ == "__main__":
    sys.exit(main())
