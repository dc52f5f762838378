"""Whether the supervisord that reads the include can load this package's plugin, which holds the port.

The rendered include carries ``[rpcinterface:sidecar]`` when supervisord can
import it: supervisord reads an included file into the same parser before it
collects its rpcinterface sections, so the include alone is enough, and
without the plugin an ``[fcgi-program]`` is a hazard to supervisord itself
(stock supervisord binds the socket again at every spawn without catching
"Address already in use": orphaned workers then end supervisord). But an
rpcinterface whose factory cannot be imported makes supervisord exit at its
start. So render asks supervisord's own interpreter, before anything is
written: the port is held only where the plugin is sure to load.

Which supervisord: ``--supervisord PATH`` when given; else the one installed
beside ``sidecar-plugin`` (pip installs supervisor with it), else the one on
PATH (Debian's ``/usr/bin/supervisord`` with the plugin in a venv beside it).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Optional, Sequence

from sidecar_plugin.shell.render.executables import takes_fd0

# Asked of supervisord's interpreter, from / without the current folder on its path and without the operator's
# PYTHON* variables (supervisord runs without them): can it import the factory, and does supervisor still have
# the shape the plugin patches (shape_problem, where this release has it)? The plugin's module is named as either
# release names it: an earlier one, installed for supervisord's Python, called it "held".
PROBE = ("import sys; del sys.path[0]; import sidecar_plugin.rpc as r; "
         "s = __import__('sidecar_plugin.shell.supervisord', fromlist=['socket_holder', 'held']); "
         "h = getattr(s, 'socket_holder', None) or s.held; "
         "f = getattr(h, 'shape_problem', None); p = f() if f else None; "
         "print('ok' if callable(r.make_rpcinterface) and not p else 'shape: ' + str(p))")
PROBE_TIMEOUT = 20.0  # imports supervisor and the plugin (well under a second; seconds on a busy host)


@dataclass(frozen=True)
class PluginHost:
    """The supervisord render checked, and why it cannot hold the port (empty: it can)."""

    supervisord: str
    problem: str = ""

    @property
    def loads(self) -> bool:
        return not self.problem

    @property
    def note(self) -> str:
        """Why the port cannot be held under this supervisord, and how it could; empty when it can."""
        if self.loads:
            return ""
        return (f"{self.supervisord} cannot load the plugin that holds the port: {self.problem}; make "
                "sidecar_plugin importable by its Python (docs/deploying.md) or name the supervisord that reads "
                "the include with --supervisord, then render again")


def find_supervisord(given: Optional[str]) -> Optional[str]:
    """Return the supervisord that will read the include: ``given``, beside this package's CLI, else on PATH."""
    if given:
        found = given if os.sep in given else shutil.which(given)
        return os.path.abspath(found) if found else os.path.abspath(given)
    beside = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "supervisord")
    if os.path.isfile(beside) and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("supervisord")
    return os.path.abspath(found) if found else None


def interpreter_of(script: str) -> Optional[str]:
    """Return the Python that runs ``script`` (its ``#!`` line; ``env python3`` looked up on PATH)."""
    try:
        with open(script, "rb") as fh:
            first = fh.readline(4096).decode("utf-8", "replace")
    except OSError:
        return None
    if not first.startswith("#!"):
        return None
    try:
        words = shlex.split(first[2:].strip())
    except ValueError:
        return None
    if words and os.path.basename(words[0]) == "env":
        words = [w for w in words[1:] if not w.startswith("-")]
        found = shutil.which(words[0]) if words else None
        return found
    return words[0] if words and os.path.isabs(words[0]) else None


_hosts: Dict[Optional[str], PluginHost] = {}


def plugin_host(given: Optional[str]) -> PluginHost:
    """``check(given)``, asked once per process: render builds twice, before and under the out-dir's lock."""
    if given not in _hosts:
        _hosts[given] = check(given)
    return _hosts[given]


def binary_note(binary: str, launcher: Sequence[str]) -> str:
    """Why supervisord cannot hold the port for ``binary``, and how it could; empty when it can."""
    if launcher or takes_fd0(binary):
        return ""
    return (f"--binary {binary} is not LiteLLM's own Python entry point (a wrapper): LiteLLM's CLI binds the port "
            "itself; --binary naming the litellm it runs has supervisord hold the port")


def check(given: Optional[str]) -> PluginHost:
    """Ask the supervisord that will read the include whether it can load the plugin."""
    path = find_supervisord(given)
    if path is None:
        return PluginHost("supervisord", "no supervisord found beside sidecar-plugin or on PATH "
                          "(name the one that reads the include with --supervisord PATH)")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        return PluginHost(path, f"--supervisord {path}: no such executable")
    python = interpreter_of(path)
    if python is None:
        return PluginHost(path, f"{path} is not a Python script render can ask")
    try:
        res = subprocess.run([python, "-E", "-c", PROBE], capture_output=True, text=True, timeout=PROBE_TIMEOUT,
                             stdin=subprocess.DEVNULL, cwd="/")
    except subprocess.TimeoutExpired:
        return PluginHost(path, f"its interpreter {python} did not answer within {PROBE_TIMEOUT:g} s")
    except (OSError, subprocess.SubprocessError) as exc:
        return PluginHost(path, f"its interpreter {python} cannot run ({type(exc).__name__})")
    answer = res.stdout.strip().splitlines()[-1:] or [""]
    if res.returncode == 0 and answer[0] == "ok":
        return PluginHost(path)
    if answer[0].startswith("shape: "):
        return PluginHost(path, f"its supervisor differs from what the plugin knows ({answer[0][7:]})")
    return PluginHost(path, f"its interpreter {python} cannot import sidecar_plugin")


PLUGIN_NOT_LOADED = ("the running supervisord has not loaded the sidecar plugin that holds the port (the include "
                     "carries it now): `supervisorctl reload` or a restart of supervisord loads it; apply again then")


def not_loaded(sidecars: Iterable[Any], rpc: Any) -> str:
    """Why the running supervisord cannot hold the port of a sidecar rendered to have it held; empty if it can.

    An rpcinterface loads only when supervisord starts: an include that gained the plugin since then would
    hand a stock supervisord an ``[fcgi-program]``, which a LiteLLM crash can end (``shell.supervisord.socket_holder``).
    """
    if not any(s.supervisord_socket for s in sidecars):
        return ""
    try:
        methods = rpc.system.listMethods()
    except Exception:  # no answer: apply says so at its first call
        return ""
    return "" if "sidecar.getState" in methods else PLUGIN_NOT_LOADED


def for_running(build: Callable[..., Any], req: Any, env: Any, rpc: Any,
                say: Callable[[str], None] = lambda line: print(f"sidecar-plugin: warning: {line}",
                                                               file=sys.stderr)) -> Any:
    """``build(req, env)``, again with the port not held where the running supervisord lacks the plugin
    (apply's render: what render alone cannot ask), saying so once."""
    rendered = build(req, env)
    missing = not_loaded(rendered.sidecars, rpc)
    if not missing:
        return rendered
    rendered = build(req, env, live_note=missing)
    for line in rendered.warnings:
        if missing in line:
            say(line)
    return rendered
