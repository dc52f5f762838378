"""What tests of every tier share that starts nothing: the keys, the profile, polling, in-process CLI runs.

Unit tests import from here only (tests/unit/test_architecture.py checks it); ``harness`` re-exports it all.
"""

from __future__ import annotations

import json
import os
import sys
import time
from subprocess import CompletedProcess
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

from sidecar_plugin.names import FD0_MARKER

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FAKE_LITELLM = os.path.join(HERE, "fake_litellm.py")


PROFILE = """name: test
models:
  heavy: anthropic/claude-opus-4.5
  fast: openrouter/deepseek/deepseek-v4-flash
"""


API_KEY = "sk-or-v1-TESTOPENROUTERKEY0123456789abcdef"
MASTER_KEY = "sk-TESTMASTERKEY0123456789abcdef0123"
KEYS = {"OPENROUTER_API_KEY": API_KEY, "AGENTROUTE_MASTER_KEY": MASTER_KEY}


def poll(check: Callable[[], Any], timeout: float, interval: float = 0.02, what: str = "condition") -> Any:
    """Return check()'s first truthy value; fail the test when the deadline passes."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")


def metric_samples(text: str) -> Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text, by name and sorted labels: values (a ``# HELP`` line names any family)."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def package_classes() -> Iterator[type]:
    """Every class the package defines, module by module (the launcher's, run by another interpreter, aside)."""
    import importlib
    import pkgutil

    import sidecar_plugin

    for info in pkgutil.walk_packages(sidecar_plugin.__path__, "sidecar_plugin."):
        if info.name.endswith("__main__") or ".litellm_launch" in info.name:
            continue
        module = importlib.import_module(info.name)
        yield from (v for v in vars(module).values() if isinstance(v, type) and v.__module__ == info.name)


def fake_binary(folder: str) -> str:
    """Write an executable that runs the stand-in LiteLLM with this interpreter."""
    path = os.path.join(folder, "fake-litellm")
    with open(path, "w") as fh:
        fh.write(f"#!/bin/sh\n# {FD0_MARKER}\nexec {sys.executable} -u {FAKE_LITELLM} \"$@\"\n")
    os.chmod(path, 0o755)
    return path


def write(path: str, text: str) -> str:
    """Write ``text`` to ``path``; return the path (tests write profiles and configs this way)."""
    with open(path, "w") as fh:
        fh.write(text)
    return path


def write_state_doc(path: Any, **fields: Any) -> str:
    """Write a fresh schema 1 state file of a crashed sidecar (``fields`` change it); return its path."""
    now = time.time()
    doc = {"schema": 1, "program": "agentroute-sidecar", "state": "crashed", "since": now, "updated_at": now,
           "heartbeat_at": now, "pid": None, "port": 4000, "host": "127.0.0.1", "supervisor_state": "BACKOFF",
           "health": {"ok": None, "checked_at": None, "latency_ms": None, "consecutive_failures": 0},
           "error": None, "log_tail": [], "listener_pid": os.getpid()}
    doc.update(fields)
    with open(path, "w") as fh:
        json.dump(doc, fh)
    return str(path)


def run_main(*args: str, env: Optional[Dict[str, str]] = None) -> CompletedProcess:
    """Run the CLI in this process (rendering is pure: no interpreter start per case).

    ``env`` entries are set for the call (an empty value unsets the variable)
    and restored after; stdout and stderr are captured as a subprocess's would be.
    """
    import contextlib
    import io

    from sidecar_plugin.cli import main

    saved = {k: os.environ.get(k) for k in (env or {})}
    out, err = io.StringIO(), io.StringIO()
    try:
        for k, v in (env or {}).items():
            if v:
                os.environ[k] = v
            else:
                os.environ.pop(k, None)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        for k, old in saved.items():
            if old is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = old
    return CompletedProcess(["sidecar-plugin", *args], code, out.getvalue(), err.getvalue())
