#!/usr/bin/env python3
"""``make demo`` and ``make stop``: the sidecar under a supervisord of its own, and a request that comes back.

Run from the clone with the venv's Python (the Makefile does). ``up`` renders
``conf/profile.example.yaml`` into ``run/``, starts supervisord (or applies
the profile to the one already running), waits until ``running``, shows the
state and the endpoint, and sends a streamed ``/v1/messages`` request and a
``count_tokens`` through the sidecar. With ``OPENROUTER_API_KEY`` set the
answer comes from OpenRouter; without one, from a loopback stand-in upstream
(``tests/support/fake_openrouter.py``, OpenAI-compatible) that this script starts in
the background (pid in ``run/upstream.pid``) and ``stop`` ends, by pid.

Every command it runs is printed as a newcomer can type it again. When the
sidecar does not reach ``running`` it says why, where the log is and what to
change, then stops everything it started: nothing keeps retrying behind.
"""

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STAND_IN = os.path.join(ROOT, "tests", "support", "fake_openrouter.py")
PLACEHOLDER_KEY = "sk-or-placeholder-not-a-real-key"
EXAMPLE = "conf/profile.example.yaml"


class Demo:
    """Where the demo's files are and how to run its commands (paths relative to the clone)."""

    def __init__(self, run: str = "run", conf: str = "conf/supervisord.conf", bin_dir: str = ".venv/bin") -> None:
        self.run, self.conf, self.bin = run, conf, bin_dir
        self.state_file = os.path.join(run, "state.json")
        self.log_file = os.path.join(run, "litellm.log")
        self.sock = os.path.abspath(os.path.join(run, "supervisor.sock"))

    def tool(self, name: str, *args: str) -> List[str]:
        return [os.path.join(self.bin, name)] + list(args)

    def ctl(self, *args: str) -> List[str]:
        return self.tool("supervisorctl", "-c", self.conf, *args)

    def show(self, cmd: List[str], env: Optional[Dict[str, str]] = None, quiet: bool = False) -> int:
        """Run ``cmd`` from the clone, printed first as a person would type it; return its exit code."""
        if not quiet:
            print("$ " + shlex.join(cmd), flush=True)
        return subprocess.run(cmd, cwd=ROOT, env=env).returncode

    def supervisord_pid(self) -> int:
        res = subprocess.run(self.ctl("pid"), cwd=ROOT, capture_output=True, text=True)
        out = res.stdout.strip()
        return int(out) if res.returncode == 0 and out.isdigit() else 0


# -- the stand-in upstream --

def _pid_file(run: str) -> str:
    return os.path.join(run, "upstream.pid")


def _ours(pid: int) -> bool:
    """Whether ``pid`` is still the stand-in this demo started (a pid may be reused)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return STAND_IN.encode() in fh.read()
    except OSError:
        return False


def upstream_running(run: str) -> Optional[Dict[str, Any]]:
    """The stand-in's ``{"pid", "base_url"}`` when the one this demo started still runs."""
    try:
        with open(_pid_file(run)) as fh:
            doc = json.load(fh)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and _ours(int(doc.get("pid") or 0)) else None


def upstream_start(run: str, timeout: float = 20.0) -> str:
    """Start the stand-in on a free loopback port (or keep the running one); return its base URL."""
    found = upstream_running(run)
    if found:
        return str(found["base_url"])
    log = os.path.join(run, "upstream.log")
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-u", STAND_IN, "--port", "0"], stdout=out, stderr=out,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd=ROOT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with open(log) as fh:
            m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", fh.read())
        if m:
            base_url = m.group(1) + "/api/v1"
            with open(_pid_file(run) + ".tmp", "w") as fh:
                json.dump({"pid": proc.pid, "base_url": base_url}, fh)
            os.replace(_pid_file(run) + ".tmp", _pid_file(run))
            return base_url
        time.sleep(0.05)
    _end(proc.pid)
    raise SystemExit(f"the stand-in upstream did not start (see {log})")


def _end(pid: int, grace: float = 5.0) -> None:
    """SIGTERM ``pid``'s session (the stand-in leads it), then SIGKILL when it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    return
            except ChildProcessError:  # not our child (another make run started it): watch /proc
                if not _ours(pid):
                    return
            time.sleep(0.05)


def upstream_stop(run: str) -> Optional[int]:
    """Stop the stand-in this demo started, by its pid; return that pid (None: none ran)."""
    found = upstream_running(run)
    if found:
        _end(int(found["pid"]))
    try:
        os.unlink(_pid_file(run))
    except FileNotFoundError:
        pass
    return int(found["pid"]) if found else None


def demo_profile(run: str, base_url: str) -> str:
    """Write ``run/profile.demo.yaml``: the example profile, its calls sent to ``base_url`` (the stand-in)."""
    with open(os.path.join(ROOT, EXAMPLE)) as fh:
        text = fh.read()
    path = os.path.join(run, "profile.demo.yaml")
    with open(path + ".tmp", "w") as fh:
        fh.write(f"# {EXAMPLE}, its calls sent to the loopback stand-in upstream (make demo without a key)\n")
        fh.write(text.rstrip("\n") + f"\napi_base: {base_url}\n")
    os.replace(path + ".tmp", path)
    return path


# -- before starting: the port --

def port_taken(port: int) -> Optional[str]:
    """Who listens on ``port`` (``pid N name``, or "another process" when it is not ours to see); None: free."""
    from sidecar_plugin.shell.processes.procs import describe, port_holders, port_is_free

    if port_is_free("127.0.0.1", port):
        return None
    return ", ".join(describe(pid) for pid in sorted(port_holders(port))) or "another process"


def profile_port(path: str) -> int:
    from sidecar_plugin.core.profiles.agentroute import load_profile

    return load_profile(path).port or 4000


# -- the requests, as a gateway sends them --

def _key(sc: Any) -> str:
    given = os.environ.get("AGENTROUTE_MASTER_KEY")
    if given:
        return given
    with open(sc.key_file()) as fh:  # master.key, 0600: never printed
        return fh.read().strip()


def ask(state_file: str, source: str, model: str = "agentroute-fast") -> bool:
    """Send a streamed ``/v1/messages`` and a ``count_tokens`` through the sidecar; print what comes back."""
    import requests

    from sidecar_plugin.client import Sidecar

    sc = Sidecar(state_file=state_file)
    http = requests.Session()
    http.trust_env = False  # loopback: never through a proxy
    headers = {"Authorization": f"Bearer {_key(sc)}", "anthropic-version": "2023-06-01"}
    body = {"model": model, "max_tokens": 64, "stream": True,
            "messages": [{"role": "user", "content": "Say hello in five words."}]}
    print(f"\n== a streamed POST {sc.base_url}/v1/messages ({model}); the answer comes from {source}")
    with http.post(sc.base_url + "/v1/messages", json=body, headers=headers, stream=True, timeout=120) as resp:
        if resp.status_code != 200:
            print(f"HTTP {resp.status_code}: {resp.text[:300]}")
            return False
        print("answer: ", end="", flush=True)
        for line in resp.iter_lines(decode_unicode=True):
            event = json.loads(line[5:]) if line and line.startswith("data:") and line[5:].strip() else {}
            if event.get("type") == "content_block_delta":
                print(event["delta"].get("text", ""), end="", flush=True)
        print()
    del body["stream"], body["max_tokens"]
    print(f"\n== POST {sc.base_url}/v1/messages/count_tokens (counted by LiteLLM itself)")
    resp = http.post(sc.base_url + "/v1/messages/count_tokens", json=body, headers=headers, timeout=60)
    print(f"HTTP {resp.status_code}: {resp.text[:300]}")
    return resp.status_code == 200


# -- when it does not reach running --

def explain(state_file: str, log_file: str) -> List[str]:
    """Say why the sidecar is not running, where its log is and what to change (lines to print)."""
    from sidecar_plugin.shell.files.statefile import state_dict

    doc = state_dict(state_file, max_age=float("inf"))
    why = doc.get("error") or f"its state is {doc.get('state')}"
    lines = ["", "make demo: the sidecar did not reach running.", f"  why:  {why}",
             f"  log:  {log_file} (and the listener's: {os.path.join(os.path.dirname(log_file), 'listener.log')})"]
    lines += [f"        {line}" for line in (doc.get("log_tail") or [])[-8:]]
    text = str(why)
    if doc.get("port_holder") or "held by" in text:
        change = f"free the port (held by {doc.get('port_holder') or 'another process'}), then make demo again"
    elif "not found" in text or "spawn" in text:
        change = "make install (LiteLLM missing from .venv), then make demo again"
    else:
        change = ("a busy host may need longer: make demo HEALTH_TIMEOUT=600 WAIT_TIMEOUT=660; "
                  "otherwise the log above says what LiteLLM refused")
    return lines + [f"  what to change: {change}",
                    "  stopping what the demo started (make stop), so nothing keeps retrying in the background"]


# -- make demo, make stop --

def _upstream(d: Demo, env: Dict[str, str]) -> Any:
    """Without a key: start the stand-in, render a profile pointing to it; return (profile, where answers come from)."""
    if env.get("OPENROUTER_API_KEY"):
        return EXAMPLE, "OpenRouter"
    base = upstream_start(d.run)
    env["OPENROUTER_API_KEY"] = PLACEHOLDER_KEY
    print(f"OPENROUTER_API_KEY is not set: the sidecar's calls go to a loopback stand-in upstream at {base} "
          f"(tests/support/fake_openrouter.py, pid file {_pid_file(d.run)}), with a placeholder key. "
          "Export a real key and run make demo again to ask OpenRouter.", flush=True)
    return demo_profile(d.run, base), f"the loopback stand-in upstream at {base}, NOT OpenRouter"


def _bring_up(d: Demo, profile: str, env: Dict[str, str], extra: List[str]) -> int:
    """Render and start supervisord, or apply to the one already running; return the first failing exit code."""
    if d.supervisord_pid():
        print("supervisord already runs: applying the profile (restarts the sidecar only if something changed)")
        return d.show(d.tool("sidecar-plugin", "apply", "--profile", profile, "--out-dir", d.run,
                             "-s", "unix://" + d.sock, *extra), env)
    port = profile_port(profile)
    held = port_taken(port)
    if held:
        print(f"make demo: port {port} is held by {held}: the sidecar could not bind it. "
              "Stop that program, then run make demo again.")
        return 1
    return (d.show(d.tool("sidecar-plugin", "render", "--profile", profile, "--out-dir", d.run, *extra), env)
            or d.show(d.tool("supervisord", "-c", d.conf), env))


def up(d: Demo, health_timeout: str = "", wait_timeout: str = "360") -> int:
    os.makedirs(d.run, exist_ok=True)
    env = dict(os.environ)
    profile, source = _upstream(d, env)
    extra = ["--health-timeout", health_timeout] if health_timeout else []
    if _bring_up(d, profile, env, extra) and not d.supervisord_pid():
        stop(d)  # nothing runs but the stand-in: the line above said why
        return 1
    if d.show(d.tool("sidecar-plugin", "wait", "--state", "running", "--timeout", wait_timeout,
                     "--state-file", d.state_file)):
        for line in explain(d.state_file, d.log_file):
            print(line)
        stop(d)
        return 1
    for cmd in (d.ctl("status"), d.ctl("sidecar", "status"), d.tool("sidecar-plugin", "endpoint", "--state-file",
                                                                     d.state_file)):
        print()
        d.show(cmd)
    answered = ask(d.state_file, source)
    print(f"\nThe sidecar runs under supervisord ({d.conf}); state: {d.state_file}, log: {d.log_file}.")
    print("Try: " + shlex.join(d.ctl("sidecar", "status")) + "   Stop everything with: make stop")
    return 0 if answered else 1


def stop(d: Demo, within: float = 90.0) -> int:
    """Shut the demo's supervisord down (the sidecar drains, the listener reaps), then the stand-in upstream."""
    code = 0
    pid = d.supervisord_pid()
    if pid:
        d.show(d.ctl("shutdown"))
        deadline = time.monotonic() + within
        while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
            time.sleep(0.1)
        if os.path.exists(f"/proc/{pid}"):
            print(f"supervisord (pid {pid}) is still stopping")
            code = 1
        else:
            print(f"supervisord (pid {pid}) and the sidecar are stopped")
    else:
        print("supervisord is not running")
    ended = upstream_stop(d.run)
    if ended:
        print(f"the stand-in upstream (pid {ended}) is stopped")
    return code


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="tests/support/demo.py", description=__doc__.split("\n")[0])
    p.add_argument("command", choices=["up", "stop", "upstream-start", "upstream-stop"])
    p.add_argument("--run", default="run")
    p.add_argument("--conf", default="conf/supervisord.conf")
    p.add_argument("--bin", default=".venv/bin")
    p.add_argument("--health-timeout", default="", help="render's --health-timeout (default: render's)")
    p.add_argument("--wait-timeout", default="360", help="seconds to wait for running (the health timeout plus 60)")
    a = p.parse_args(argv)
    os.chdir(ROOT)  # the commands it prints are typed from the clone
    d = Demo(a.run, a.conf, a.bin)
    if a.command == "up":
        return up(d, a.health_timeout, a.wait_timeout)
    if a.command == "stop":
        return stop(d)
    if a.command == "upstream-start":
        os.makedirs(a.run, exist_ok=True)
        print(upstream_start(a.run))
        return 0
    ended = upstream_stop(a.run)
    print(f"the stand-in upstream (pid {ended}) is stopped" if ended else "no stand-in upstream runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
