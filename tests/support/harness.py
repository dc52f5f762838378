"""Test harness: a real supervisord in a temp dir, running a rendered sidecar.

Every process a test starts is owned: supervisord runs in its own session, and
cleanup kills that process group, every process that carries this render's
marker (its tree, workers that setsid away included) and anything still
listening on the test's port that descends from them. Never by name.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import xmlrpc.client
from typing import Any, Callable, Dict, List, Optional, Set

import psutil

from sidecar_plugin.names import MARKER_ENV
from sidecar_plugin.core.state.schema import StateUnavailable
from sidecar_plugin.shell.files.statefile import read_state
from sidecar_plugin.shell.processes.procs import connections_of
from sidecar_plugin.shell.supervisord.supervisor import rpc_proxy
from inprocess import (  # noqa: F401  (re-exported: the tests import them from here)
    HERE, ROOT, FAKE_LITELLM, PROFILE, API_KEY, MASTER_KEY, KEYS, poll, metric_samples, package_classes,
    fake_binary, write, write_state_doc, run_main,
)

CLI = [sys.executable, "-m", "sidecar_plugin"]
PORTS = (20000, 32768)  # the tests' ports: below the kernel's ephemeral range (ip_local_port_range)


def free_port() -> int:
    """A free loopback port that no other run of this suite picks at the same time.

    Drawn below the kernel's ephemeral range (32768 and up), where no client's connection takes one
    between the draw and the bind, and dealt by remainder to runs side by side (pytest-xdist's workers,
    the lowest versions' tier beside them): worker N of a run (``SIDECAR_TEST_PORT_SLOT`` for a run of
    its own) takes only ports whose remainder by the number of runs (``SIDECAR_TEST_PORT_SLOTS``, else
    the workers') is N. (Not bind(0)'s port: Linux gives bind(0) mostly even ports, and a worker dealt
    the odd ones would wait for one.)
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    slot = int(worker[2:]) if worker.startswith("gw") else int(os.environ.get("SIDECAR_TEST_PORT_SLOT", "0"))
    slots = int(os.environ.get("SIDECAR_TEST_PORT_SLOTS") or os.environ.get("PYTEST_XDIST_WORKER_COUNT") or "1")
    draw = random.SystemRandom()
    for _ in range(1000):
        port = draw.randrange(PORTS[0] + slot % slots, PORTS[1], slots)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:  # taken: draw again
                continue
            return port
    raise AssertionError(f"no free port in {PORTS} for slot {slot} of {slots}")


def run_cli(*args: str, env: Optional[Dict[str, str]] = None, timeout: float = 60,
            cwd: Optional[str] = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env.update(env or {})
    # from another folder, the console script an operator types (``python -m`` would put that folder on the path)
    cli = [os.path.join(os.path.dirname(sys.executable), "sidecar-plugin")] if cwd else CLI
    return subprocess.run(cli + list(args), capture_output=True, text=True, env=full_env, timeout=timeout,
                          cwd=cwd or ROOT)


def lives(p: psutil.Process) -> bool:
    """Whether ``p`` still runs: not gone, not a zombie, also when it exits while it is looked at.

    ``p.is_running() and p.status() != ZOMBIE`` raised NoSuchProcess when the process went between the two
    questions (a fresh-clone run's failure, in a poll for drained orphans).
    """
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:  # ZombieProcess is one
        return False


def live_children(pid: int) -> List[psutil.Process]:
    """The children of ``pid`` that live (one that exits while it is looked at is left out, zombie or gone)."""
    return [child for child in psutil.Process(pid).children() if lives(child)]


def argv(p: psutil.Process) -> List[str]:
    """A process's argv, or none when it exits while it is read."""
    try:
        return p.cmdline()
    except psutil.NoSuchProcess:  # ZombieProcess is one
        return []


HOG = "import time\nend = time.time() + {seconds}\nwhile time.time() < end:\n    pass\n"


class CpuHogs:
    """CPU-bound processes beside the sidecar, as on a busy host (bounded in time; stopped by pid).

    One per core by default: every core busy with other work, the sidecar's start sharing each. (Three on
    2 cores burned a third more CPU for the same verdict, in a suite whose length is its CPU.)
    """

    def __init__(self, count: Optional[int] = None, seconds: float = 300) -> None:
        self.procs = [subprocess.Popen([sys.executable, "-c", HOG.format(seconds=seconds)], start_new_session=True)
                      for _ in range(count or os.cpu_count() or 2)]

    def busy(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def stop(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait(10)


class Sessions:
    """Processes a test starts in sessions of their own, each saying ``up`` when ready; killed by group after."""

    def __init__(self) -> None:
        self.started: List[subprocess.Popen] = []

    def start(self, argv: List[str], env: Optional[Dict[str, str]] = None) -> subprocess.Popen:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, start_new_session=True, env=env)
        self.started.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"up"
        return proc

    def cleanup(self) -> None:
        for proc in self.started:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(10)


SUPERVISORD_CONF = """[unix_http_server]
file={sock}

{inet}
[supervisord]
logfile={dir}/supervisord.log
pidfile={dir}/supervisord.pid
childlogdir={dir}
nodaemon=true
loglevel=info

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

{plugin}[supervisorctl]
serverurl=unix://{sock}

[ctlplugin:sidecar]
supervisor.ctl_factory = sidecar_plugin.ctl:make_ctlplugin

[include]
files = {include}
"""


PLUGIN_SECTION = """[rpcinterface:sidecar]
supervisor.rpcinterface_factory = sidecar_plugin.rpc:make_rpcinterface

"""


class Sidecar:
    """One rendered sidecar under one real supervisord, owned by one test.

    ``plugin_in_main``: supervisord's own file names the plugin too (the include carries it where render
    found supervisord can import it); False: the include alone.
    """

    plugin_in_main = True

    def __init__(self, folder: str, workers: int = 1, mode: Optional[Dict[str, Any]] = None,
                 render_args: Optional[List[str]] = None, inet: Optional[Dict[str, Any]] = None,
                 binary: Optional[str] = None, env: Optional[Dict[str, str]] = None,
                 profile_text: str = PROFILE, render_env: Optional[Dict[str, str]] = None) -> None:
        self._places(folder, os.path.join(folder, "out"), inet, env)
        os.makedirs(self.out, exist_ok=True)
        self.profile = os.path.join(folder, "profile.yaml")
        with open(self.profile, "w") as fh:
            fh.write(profile_text)
        self.set_mode(mode or {})
        self.render_args = ["--profile", self.profile, "--out-dir", self.out, "--port", str(self.port),
                            "--binary", binary or fake_binary(folder), "--workers", str(workers)] + (render_args or [])
        self.render_env = dict(KEYS, **(render_env or {}))  # render and apply see the same keys
        res = run_cli("render", *self.render_args, env=self.render_env)
        assert res.returncode == 0, res.stderr
        self.write_supervisord_conf()

    def _places(self, folder: str, out: str, inet: Optional[Dict[str, Any]] = None,
                env: Optional[Dict[str, str]] = None) -> None:
        """Name where everything of this sidecar lives (subclasses for other layouts call it too)."""
        self.dir = folder
        self.out = out
        self.port = free_port()
        self.sock = os.path.join(folder, "s.sock")
        self.conf = os.path.join(folder, "supervisord.conf")
        self.state_file = os.path.join(self.out, "state.json")
        self.log_file = os.path.join(self.out, "litellm.log")
        self.program = "agentroute-sidecar"
        self.proc: Optional[subprocess.Popen] = None
        self.inet = inet
        self.env = env or {}
        self.marker = f"{self.program}@{os.path.join(self.out, 'litellm.yaml')}"

    def write_supervisord_conf(self) -> None:
        """Write supervisord's own config: the unix socket, an inet server if asked, our include."""
        inet_section = ""
        if self.inet:
            inet_section = ("[inet_http_server]\nport=127.0.0.1:{port}\nusername={username}\n"
                            "password={password}\n").format(**self.inet)
        with open(self.conf, "w") as fh:
            fh.write(SUPERVISORD_CONF.format(sock=self.sock, dir=self.dir, inet=inet_section,
                                             include=os.path.join(self.out, "sidecar.conf"),
                                             plugin=PLUGIN_SECTION if self.plugin_in_main else ""))

    def set_mode(self, mode: Dict[str, Any]) -> None:
        """Tell the stand-in how to behave at its next start (its start count begins again)."""
        with open(os.path.join(self.out, "fake_mode.json"), "w") as fh:
            json.dump(mode, fh)
        try:
            os.unlink(os.path.join(self.out, "fake_starts"))
        except FileNotFoundError:
            pass

    def apply(self, *extra: str, cwd: Optional[str] = None, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run ``sidecar-plugin apply`` (from ``cwd``) with the options this sidecar was rendered with."""
        return run_cli("apply", *self.render_args, "-s", "unix://" + self.sock, *extra, env=self.render_env,
                       timeout=timeout, cwd=cwd)

    # -- supervisord --
    def start_supervisord(self, wait_state: Optional[str] = "running", timeout: float = 30) -> None:
        env = dict(os.environ)
        env.update(self.env)
        self.proc = subprocess.Popen([sys.executable, "-m", "supervisor.supervisord", "-c", self.conf],
                                     cwd=self.dir, env=env, start_new_session=True,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        poll(self._rpc_up, 20, what="supervisord's socket")
        if wait_state:
            self.wait_state(wait_state, timeout)

    def _rpc_up(self) -> bool:
        try:
            return self.rpc().supervisor.getState()["statename"] == "RUNNING"
        except (OSError, xmlrpc.client.Error):
            return False

    def rpc(self) -> Any:
        return rpc_proxy("unix://" + self.sock, env={})

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "supervisor.supervisorctl", "-c", self.conf] + list(args),
                              capture_output=True, text=True, timeout=timeout)

    # -- observing --
    def state(self) -> Optional[Any]:
        try:
            return read_state(self.state_file)
        except StateUnavailable:
            return None

    def wait_state(self, state: str, timeout: float = 30, pred: Callable[[Any], bool] = lambda s: True) -> Any:
        return poll(lambda: (lambda s: s if s is not None and s.state.value == state and pred(s) else None)(self.state()),
                    timeout, what=f"state {state}")

    def info(self) -> Dict[str, Any]:
        return self.rpc().supervisor.getProcessInfo(f"{self.program}:{self.program}")

    def listener_info(self) -> Dict[str, Any]:
        name = f"{self.program}-health"
        return self.rpc().supervisor.getProcessInfo(f"{name}:{name}")

    def marked(self) -> List[psutil.Process]:
        """Every live process of this test's sidecar trees (by the render's marker)."""
        found = []
        for p in psutil.process_iter(["pid"]):
            try:
                if p.environ().get(MARKER_ENV) == self.marker and p.status() != psutil.STATUS_ZOMBIE:
                    found.append(p)
            except (psutil.Error, OSError):
                continue
        return found

    def port_listeners(self) -> List[int]:
        """The processes listening on the port, supervisord excepted (it owns the socket of an
        ``[fcgi-program]``, which stays open by design: see ``supervisord_listens``)."""
        return sorted(self._listeners() - {self.proc.pid if self.proc else None})

    def supervisord_listens(self) -> bool:
        return self.proc is not None and self.proc.pid in self._listeners()

    def _listeners(self) -> Set[int]:
        """Every process holding a listening socket on the port (psutil's system-wide table names only
        one holder of a socket that several processes share, so each process is asked)."""
        found = set()
        for p in psutil.process_iter():
            try:
                if any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == self.port
                       for c in connections_of(p)):
                    found.add(p.pid)
            except (psutil.Error, OSError):
                continue
        return found

    def health_ok(self) -> bool:
        import requests
        s = requests.Session()
        s.trust_env = False
        try:
            return s.get(f"http://127.0.0.1:{self.port}/health/liveliness", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def history(self) -> List[Dict[str, Any]]:
        from sidecar_plugin.shell.files.statefile import read_history
        return read_history(self.state_file)

    def states_until(self, last: str, timeout: float = 10) -> List[str]:
        """The states of the history once its last line is ``last`` (the line follows the state file's write)."""
        return poll(lambda: (lambda s: s if s and s[-1] == last else None)([e["state"] for e in self.history()]),
                    timeout, what=f"the history to end in {last}")

    # -- cleanup --
    def cleanup(self) -> None:
        """Kill everything this test started: supervisord's group, then marked leftovers."""
        owned: List[psutil.Process] = []
        if self.proc is not None:
            try:
                owned = psutil.Process(self.proc.pid).children(recursive=True)
            except psutil.Error:
                owned = []
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        for p in owned + self.marked():
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(owned, timeout=5)


class Fleet(Sidecar):
    """Several profiles rendered as one fleet (one group, one listener) under one real supervisord."""

    def __init__(self, folder: str, profiles: Dict[str, Dict[str, Any]], base_port: int,
                 metrics: bool = True) -> None:
        self.dir = folder
        self.out = os.path.join(folder, "out")
        self.sock = os.path.join(folder, "s.sock")
        self.conf = os.path.join(folder, "supervisord.conf")
        self.profiles_dir = os.path.join(folder, "profiles")
        self.metrics_file = os.path.join(folder, "sidecars.prom")
        self.proc = None
        self.inet = None
        self.env = {}
        self.program = "agentroute-health"
        os.makedirs(self.profiles_dir, exist_ok=True)
        for name, doc in profiles.items():
            self.write_profile(name, doc)
        self.render_args = ["--profile", self.profiles_dir, "--out-dir", self.out, "--port", str(base_port),
                            "--binary", fake_binary(folder)] + (["--metrics-file", self.metrics_file] if metrics else [])
        self.render_env = dict(KEYS)
        res = run_cli("render", *self.render_args, env=self.render_env)
        assert res.returncode == 0, res.stderr
        with open(self.conf, "w") as fh:
            fh.write(SUPERVISORD_CONF.format(sock=self.sock, dir=folder, inet="", plugin=PLUGIN_SECTION,
                                             include=os.path.join(self.out, "sidecar.conf")))

    def write_profile(self, name: str, doc: Dict[str, Any]) -> None:
        with open(os.path.join(self.profiles_dir, f"{name}.json"), "w") as fh:
            json.dump(dict(doc, name=name), fh)

    def state_file_of(self, program: str) -> str:
        return os.path.join(self.out, program, "state.json")

    def state_of(self, program: str) -> Optional[Any]:
        try:
            return read_state(self.state_file_of(program))
        except StateUnavailable:
            return None

    def wait_state_of(self, program: str, state: str, timeout: float = 30,
                      pred: Callable[[Any], bool] = lambda s: True) -> Any:
        return poll(lambda: (lambda s: s if s is not None and s.state.value == state and pred(s) else None)(
            self.state_of(program)), timeout, what=f"{program} {state}")

    def wait_state(self, state: str, timeout: float = 30, pred: Callable[[Any], bool] = lambda s: True) -> Any:
        programs = [n for n in os.listdir(self.out) if os.path.isdir(os.path.join(self.out, n))]
        return [self.wait_state_of(p, state, timeout, pred) for p in sorted(programs)]

    def marked(self) -> List[psutil.Process]:
        """Every live process carrying one of this fleet's markers."""
        prefix = tuple(f"{n}@{os.path.join(self.out, n)}" for n in os.listdir(self.out))
        found = []
        for p in psutil.process_iter(["pid"]):
            try:
                if p.environ().get(MARKER_ENV, "").startswith(prefix) and p.status() != psutil.STATUS_ZOMBIE:
                    found.append(p)
            except (psutil.Error, OSError):
                continue
        return found
