"""Which LiteLLM an install holds, and whether it was installed after a sidecar started.

``pip install -U litellm`` in the sidecar's environment changes no file render
writes and no command line, so neither supervisord nor apply's comparison of
files sees it, and the live sidecar runs the old code until it restarts. Apply
asks the install itself: LiteLLM's interpreter (the one ``--binary``'s entry
point names) says which ``litellm`` it imports and where its metadata lies; a
metadata folder written after the sidecar's main process started means that
process runs an older install.

The folder's mtime is the install's time: pip and uv create it anew (a new
version, or ``--force-reinstall`` of the same one) and write its files last,
while ``chmod``/``chown``/hard links (which move a file's ctime) and edits of a
file inside it leave it alone, so apply stays idempotent on a host whose
configuration tool fixes permissions on every pass. The probe runs from ``/``
without the current folder on its path: an operator's folder holding a
``litellm`` checkout or a module named like the standard library's is neither
believed nor run.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import psutil

from sidecar_plugin.core.render.options import RenderOptions
from sidecar_plugin.shell.litellm_launch.reexec import IMAGE_STARTED
from sidecar_plugin.shell.render.executables import litellm_launcher
from sidecar_plugin.shell.files.statefile import state_dict

# Asked of LiteLLM's interpreter: the version, the dist-info folder and the package's __init__ (found, not
# imported: LiteLLM's import takes seconds). -E: no PYTHON* variable of the operator's shell, as under
# supervisord; `del sys.path[0]`: not the current folder (`-c` puts it first), before anything is imported.
PROBE = ("import sys; del sys.path[0]; import importlib.metadata as m, importlib.util as u; "
         "d = m.distribution('litellm'); s = u.find_spec('litellm'); "
         "print(d.version); print(s.origin if s else ''); print(getattr(d, '_path', '') or '')")
# It finds, not imports: well under a second here, seconds on a loaded host. Beyond this it is not waited for
# (it is asked once per install, each apply).
PROBE_TIMEOUT = 10.0
# A process's start time comes from the kernel's boot time in whole seconds (psutil: up to 1 s early); an install
# less than this after it cannot be told from one before it, and is what it loaded: LiteLLM imports itself
# seconds after its process starts.
SAME_START = 2.0


@dataclass(frozen=True)
class Install:
    version: str
    origin: str  # litellm/__init__.py
    installed_at: float  # when pip (or uv) wrote it: its dist-info folder's mtime, else the package's ctime


def _ask(interpreter: str, code: str) -> Union["subprocess.CompletedProcess[str]", str]:
    """Run ``code`` in ``interpreter`` as the probes run (from ``/``, ``-E``); its result, or why it did not run."""
    try:
        return subprocess.run([interpreter, "-E", "-c", code], capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT, stdin=subprocess.DEVNULL, cwd="/")
    except subprocess.TimeoutExpired:
        return f"it did not answer within {PROBE_TIMEOUT:g} s"
    except (OSError, subprocess.SubprocessError) as exc:
        return f"it cannot run ({type(exc).__name__})"


def install_of(interpreter: str) -> Union[Install, str]:
    """The LiteLLM ``interpreter`` imports, or why that cannot be told."""
    res = _ask(interpreter, PROBE)
    if isinstance(res, str):
        return res
    lines = res.stdout.splitlines()
    if res.returncode != 0 or len(lines) < 2 or not lines[1]:
        return "it finds no litellm package with its metadata"
    meta = lines[2] if len(lines) > 2 and os.path.isabs(lines[2]) else ""
    try:
        when = os.stat(meta).st_mtime if meta else os.stat(lines[1]).st_ctime
    except OSError as exc:
        return f"its files cannot be read ({exc.strerror})"
    if when > time.time() + SAME_START:  # written by a clock ahead of this one: "since it started" every time
        return f"its {os.path.basename(meta or lines[1])} is dated in the future"
    return Install(lines[0].strip(), lines[1], when)


def finds(interpreter: str, module: str) -> Optional[bool]:
    """Whether ``interpreter`` finds ``module`` (found, not imported); None when it cannot be told."""
    res = _ask(interpreter, f"import sys; del sys.path[0]; import importlib.util as u; "
                            f"print(u.find_spec({module!r}) is not None)")
    if isinstance(res, str) or res.returncode != 0:
        return None
    return {"True": True, "False": False}.get(res.stdout.strip())


def started_at(pid: object) -> Optional[float]:
    if not isinstance(pid, int) or pid <= 0:
        return None
    try:
        proc = psutil.Process(pid)
        since = proc.create_time()
    except (psutil.Error, OSError):
        return None
    try:  # a launcher re-executed in place (same pid) imported LiteLLM anew then
        return max(since, float(proc.environ().get(IMAGE_STARTED, "0")))
    except (psutil.Error, OSError, ValueError):
        return since


def reinstalled(sidecars: Sequence[RenderOptions], say: Callable[[str], None] = lambda line: None) -> Dict[str, str]:
    """Map program -> why its live sidecar runs an older LiteLLM than its install now holds.

    Only sidecars whose ``--binary`` is LiteLLM's entry point (an interpreter
    to ask) and whose state names a live main process are judged. An install
    that cannot be judged is said (an upgrade in place goes unseen this time),
    once per interpreter.
    """
    asked: Dict[str, Union[Install, str]] = {}
    out = {}
    for s in sidecars:
        head = litellm_launcher(s.binary)
        if not head:
            continue
        since = started_at(state_dict(s.state_file).get("pid"))
        if since is None:
            continue
        if head[0] not in asked:
            asked[head[0]] = install_of(head[0])
            if isinstance(asked[head[0]], str):
                say(f"{s.program}: cannot tell which LiteLLM {head[0]} holds ({asked[head[0]]}): a LiteLLM "
                    "upgraded in place is not seen by this apply")
        now = asked[head[0]]
        if isinstance(now, Install) and now.installed_at > since + SAME_START:
            out[s.program] = f"LiteLLM {now.version} installed since it started"
    return out


def without_prometheus(launcher: Tuple[str, ...]) -> Tuple[str, ...]:
    """The line saying traffic metrics stay off, when LiteLLM's install lacks prometheus_client; else none.

    LiteLLM's Prometheus callback imports it, and a LiteLLM that cannot does
    not start: the sidecar must start without its metrics rather than not at
    all. Only an install whose interpreter is known (``--binary`` is LiteLLM's
    own entry point) is asked; a wrapper is taken to hold it (the install
    paths of this package put it beside LiteLLM).
    """
    if not launcher or finds(launcher[0], "prometheus_client") is not False:
        return ()
    return (f"traffic metrics: off, LiteLLM's install ({launcher[0]}) lacks prometheus_client: "
            f"{os.path.join(os.path.dirname(launcher[0]), 'pip')} install prometheus_client, then apply again",)
