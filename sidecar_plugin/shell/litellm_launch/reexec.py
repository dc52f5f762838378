"""Replace the whole tree without a wait: the launcher re-executes itself in place on SIGUSR2.

Under supervisord a program has one pid, so a new tree cannot start beside
the old one as nginx's binary upgrade or gunicorn's USR2 do (gunicorn's new
master is a child of the old one, which supervisord cannot follow). As
HAProxy's master does on a reload, the launcher ``exec``s itself: the same
pid, the listening socket and the private health socket handed over by
descriptor (``SIDECAR_HANDOVER``), its workers still its children. The new
image imports LiteLLM afresh (an upgrade in place is served), forks new
workers, and once every one of them serves, the old ones (adopted) get
SIGTERM and drain, SIGKILL after the drain window. Meanwhile the old workers
serve: no request waits for the import. supervisord and the listener see the
same process throughout; the workers' births say a new tree serves.

Imports nothing of sidecar_plugin (the launcher runs under LiteLLM's interpreter).
"""

import json
import os
import signal
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

HANDOVER = "SIDECAR_HANDOVER"
LAUNCH = "--launch"  # supervisord's command names only this file: the argv to run is read from it at each exec
EXECED = "SIDECAR_LAUNCHED"  # the argv this process was executed as from the launch file (once, not a loop)
# when this image was executed (a re-exec keeps the process's start time): /proc/PID/environ shows it, and
# apply tells from it whether the live image is older than a LiteLLM upgraded in place
IMAGE_STARTED = "SIDECAR_IMAGE_STARTED"
MARGIN = 5.0  # seconds past the drain window before an adopted worker is SIGKILLed


def inherited() -> Optional[Dict[str, Any]]:
    """What the previous image handed over (listening fd, health fd, adopted pids), or None; taken once."""
    raw = os.environ.pop(HANDOVER, "")
    try:
        doc: Any = json.loads(raw) if raw else None  # None: the TypeError below says nothing handed over
        listen = int(doc["listen"])
        health = None if doc.get("health") is None else int(doc["health"])
        adopt = [int(p) for p in doc.get("adopt") or []]
    except (ValueError, TypeError, KeyError):
        return None
    return {"listen": listen, "health": health, "adopt": adopt}


def launch_file(args: List[str]) -> Optional[str]:
    return args[args.index(LAUNCH) + 1] if LAUNCH in args[:-1] else None


def wanted(path: str) -> List[str]:
    """The argv ``path`` asks for (its interpreter, this folder, ``--launch path``, the flags); ValueError, OSError."""
    with open(path) as fh:
        doc = json.load(fh)
    argv = doc.get("argv") if isinstance(doc, dict) else None
    if not isinstance(argv, list) or len(argv) < 2 or not all(isinstance(a, str) for a in argv):
        raise ValueError("no argv list in it")
    return argv[:2] + [LAUNCH, path] + argv[2:]


def launched(args: List[str]) -> List[str]:
    """The flags to run with: ``args``, or under ``--launch F`` F's, once this process runs F's interpreter.

    supervisord's command starts the launcher with this package's interpreter: it executes F's (LiteLLM's
    install) at once, the same pid, fd 0 (the listening socket) and the environment kept.
    """
    path = launch_file(args)
    if path is None:
        return args
    try:
        want = wanted(path)
    except (OSError, ValueError) as exc:
        sys.exit("sidecar launcher: cannot read %s (%s)" % (path, exc))
    mark = json.dumps(want)
    if os.environ.pop(EXECED, "") != mark and list(getattr(sys, "orig_argv", [])) != want:
        os.environ[EXECED] = mark
        os.environ[IMAGE_STARTED] = repr(time.time())
        try:
            os.execv(want[0], want)
        except OSError as exc:
            sys.exit("sidecar launcher: cannot execute %s (%s)" % (want[0], exc))
    os.environ.setdefault(IMAGE_STARTED, repr(time.time()))
    return want[4:]


def children() -> List[int]:
    """The live children of this process (its workers, retiring ones too), read from /proc."""
    me, found = os.getpid(), []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == me and fields[0] != "Z":
            found.append(int(name))
    return sorted(found)


def reexec(listen_fd: int, health: Any) -> None:
    """Execute this launcher again in this process, handing over the sockets and the workers (returns only when
    the interpreter cannot be executed)."""
    os.set_inheritable(listen_fd, True)
    health_fd = None
    if health is not None:
        health_fd = health.fileno()
        os.set_inheritable(health_fd, True)
    adopt = children()
    os.environ[HANDOVER] = json.dumps({"listen": listen_fd, "health": health_fd, "adopt": adopt})
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable] + sys.argv)
    path = launch_file(sys.argv)
    if path is not None:  # what launch.json says now: apply may have changed the flags or the interpreter
        try:
            argv = wanted(path)
        except (OSError, ValueError) as exc:
            print("sidecar launcher: SIGUSR2: cannot read %s (%s): this tree keeps serving" % (path, exc), flush=True)
            return
        os.environ[EXECED] = json.dumps(argv)
    os.environ[IMAGE_STARTED] = repr(time.time())
    print("sidecar launcher: SIGUSR2: executing itself again (pid %d); workers %s serve until the new ones do"
          % (os.getpid(), " ".join(map(str, adopt)) or "(none)"), flush=True)
    try:
        os.execv(argv[0] if path is not None else sys.executable, argv)
    except OSError as exc:  # the interpreter is gone (its install removed): keep serving as it is
        for name in (HANDOVER, EXECED):
            os.environ.pop(name, None)
        print("sidecar launcher: cannot execute %s again (%s): this tree keeps serving"
              % (argv[0] if path is not None else sys.executable, exc), flush=True)


def drain_window() -> float:
    value = os.environ.get("GRACEFUL_SHUTDOWN_TIMEOUT", "")
    return (float(value) if value.isdigit() else 30.0) + MARGIN


def retire(pids: Tuple[int, ...]) -> None:
    """SIGTERM the adopted workers (they drain); reap them in a thread, SIGKILL what outlives the drain window."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    if pids:
        print("sidecar launcher: the new workers serve: draining the previous ones %s" % " ".join(map(str, pids)),
              flush=True)
        threading.Thread(target=_reap, args=(list(pids), time.monotonic() + drain_window()), name="adopted",
                         daemon=True).start()


def _reap(pids: List[int], deadline: float) -> None:
    left = set(pids)
    while left:
        for pid in list(left):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                left.discard(pid)
        if left and time.monotonic() >= deadline:
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            deadline = float("inf")
        time.sleep(0.1)
