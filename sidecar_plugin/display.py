"""What a person reads of a sidecar's state: its status lines (the CLI and supervisorctl), a wait's progress.

One human line (plus error and log tail) for a sidecar state, the
progress line ``wait`` keeps on stderr while LiteLLM takes seconds to start,
output that goes quiet when its reader leaves (``| head -1``) and output
that masks the secrets the command knows.
"""

from __future__ import annotations

import os
import sys
import time
from typing import IO, Any, Callable, Dict, List, Optional

from sidecar_plugin.core.state.text import printable
from sidecar_plugin.names import EXIT_DOWN, EXIT_OK, OWNER_SUPERVISORD, State


def stopped_line(program: str, doc: Dict[str, Any]) -> str:
    """What a finished stop says: the port is free, or supervisord keeps it (connections wait for a start)."""
    if doc.get("port_owner") == OWNER_SUPERVISORD and doc.get("port_held") is not False:
        return (f"{program}: stopped (no process left; supervisord keeps the port: new connections wait in "
                "its queue until the sidecar starts)")
    return f"{program}: stopped (no process left, port free)"


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def status_lines(doc: Dict[str, Any], program: str, now: Optional[float] = None, tail: int = 10) -> List[str]:
    """Return the status of one sidecar for a person: a line, then why, then the log tail."""
    now = time.time() if now is None else now
    state = doc.get("state", "unknown")
    parts = [f"{program:<24} {state.upper() if isinstance(state, str) else state:<9}"]
    if doc.get("pid"):
        parts.append(f"pid {doc['pid']}")
    if doc.get("port"):
        parts.append(f"port {doc['port']}")
    if doc.get("since"):
        parts.append(f"for {_ago(now - float(doc['since']))}")
    health = doc.get("health") or {}
    if health.get("latency_ms") is not None and state == State.RUNNING:
        parts.append(f"health {health['latency_ms']:.1f} ms")
    if doc.get("supervisor_state"):
        parts.append(f"supervisord {doc['supervisor_state']}")
    if doc.get("is_stale") and doc.get("available", True):
        parts.append("(stale: listener silent)")
    lines = [printable("  ".join(parts))]
    if doc.get("error"):
        lines.append(printable(f"  error: {doc['error']}"))
    lines += port_lines(doc)
    retry = _section(doc, "retry")
    if retry.get("attempt"):
        if retry.get("next_at"):
            at = float(retry["next_at"])
            when = time.strftime("%H:%M:%S", time.localtime(at))
            lines.append(f"  retry: attempt {retry['attempt']} in {_ago(at - now)} (at {when}), "
                         "started again by the listener until stopped")
        else:
            lines.append(f"  retry: attempt {retry['attempt']} under way")
    lines += memory_lines(doc, now)
    log_tail = doc.get("log_tail") or []
    if state == State.CRASHED and log_tail:
        lines.append("  last lines of its log:")
        lines.extend("    " + printable(str(line)) for line in log_tail[-tail:])
    return lines


def port_lines(doc: Dict[str, Any]) -> List[str]:
    """Who else holds the port; that supervisord does not hold it open while LiteLLM is down, and why."""
    lines = [printable(f"  port held by: {doc['port_holder']}")] if doc.get("port_holder") else []
    if doc.get("port_held") is False:
        lines.append(printable(f"  port not held by supervisord (connections are refused while LiteLLM restarts): "
                               f"{doc.get('port_note') or 'LiteLLM binds it itself'}"))
    return lines


def memory_lines(doc: Dict[str, Any], now: float) -> List[str]:
    """Each process's memory against the budget, the replacements, a back-off (``core.listener.budget``)."""
    mem = _section(doc, "memory")
    procs = [p for p in mem.get("processes") or [] if isinstance(p, dict)]
    if not procs and not mem.get("replacements") and not mem.get("backoffs"):
        return []
    budget = mem.get("budget_mb")
    head = f"  memory ({str(mem.get('measure') or 'pss').upper()}): " + ", ".join(
        f"{'main' if p.get('role') == 'main' else 'worker'} {p.get('pid')} {float(p.get('mb') or 0):.0f} MB"
        for p in procs)
    lines = [printable(head + (f"; budget {budget:g} MB per worker" if isinstance(budget, (int, float))
                               else "; no budget (--memory-budget)"))]
    last = _section(mem, "last")
    if mem.get("replacements") or mem.get("failures"):
        text = f"  replaced over budget: {mem.get('replacements') or 0}, failed: {mem.get('failures') or 0}"
        if last.get("at"):
            text += (f" (last: worker {last.get('pid')} at {last.get('mb')} MB, {last.get('result')}, "
                     f"{_ago(now - float(last['at']))} ago)")
        lines.append(printable(text))
    replacing = mem.get("replacing")
    if isinstance(replacing, dict) and replacing.get("asked_at"):
        lines.append(printable(f"  replacing worker {replacing.get('pid')} ({replacing.get('mb')} MB) for "
                               f"{_ago(now - float(replacing['asked_at']))}: its replacement serves first"))
    backoff = _section(mem, "backoff")
    if backoff.get("until") and float(backoff["until"]) > now:
        lines.append(printable(f"  memory budget backing off for {_ago(float(backoff['until']) - now)} "
                               f"(back-off {backoff.get('attempt')}): {backoff.get('reason')}"))
    return lines


def doing_line(program: str, doc: Dict[str, Any], now: Optional[float] = None) -> str:
    """One line for a sidecar apply leaves not running: its state, why, and when the listener tries again."""
    now = time.time() if now is None else now
    if not doc:
        return f"{program}: state unknown (its listener has not written a current state file)"
    state = doc.get("state", "unknown")
    if state == State.STOPPED:
        return (f"{program}: stopped (an operator's stop, or --no-autostart): apply leaves it stopped "
                f"(sidecar-plugin start --program {program})")
    parts = [f"{program}: {state}" + (f" for {_ago(now - float(doc['since']))}" if doc.get("since") else "")]
    if doc.get("supervisor_state"):
        parts.append(f"supervisord {doc['supervisor_state']}")
    if doc.get("error"):
        parts.append(str(doc["error"]).splitlines()[0] if str(doc["error"]).strip() else "")
    retry = _section(doc, "retry")
    if retry.get("next_at"):
        at = float(retry["next_at"])
        parts.append(f"next try at {time.strftime('%H:%M:%S', time.localtime(at))} (in {_ago(at - now)})")
    elif state == State.CRASHED:
        parts.append("no retry scheduled: start it by hand")
    return printable("; ".join(p for p in parts if p))


class Progress:
    """A visible progress line on stderr while waiting (LiteLLM takes seconds to start)."""

    def __init__(self, program: str, target: str) -> None:
        self.program, self.target = program, target
        self.t0 = time.monotonic()
        self.last = -10.0
        self.tty = sys.stderr.isatty()

    def show(self, doc: Dict[str, Any]) -> None:
        now = time.monotonic()
        if now - self.last < (0.5 if self.tty else 5.0) or doc.get("state") == self.target:
            return  # there is nothing to wait for once it is there
        self.last = now
        line = (f"waiting for {self.program} to be {self.target}: {doc.get('state', 'unknown')}"
                f" ({now - self.t0:.0f} s)")
        if doc.get("error") and doc.get("state") == State.CRASHED:
            line += f": {doc['error']}"
        sys.stderr.write(("\r\033[K" + line) if self.tty else line + "\n")
        sys.stderr.flush()

    def done(self) -> None:
        if self.tty and self.last > -10.0:
            sys.stderr.write("\n")
            sys.stderr.flush()


class PipeGuard:
    """A text stream that goes quiet when its reader has gone (``status | head -1``, a pager quit early).

    Python's documentation ("Note on SIGPIPE") points the descriptor at
    /dev/null then, so the interpreter's last flush has nothing to complain
    about. The command itself carries on and keeps its exit code: a closed
    pager must not cut an ``apply`` halfway through.
    """

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._to_devnull()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._to_devnull()

    def _to_devnull(self) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self._stream.fileno())
        finally:
            os.close(devnull)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class Redacting:
    """A text stream that masks secrets (supervisord's credentials, the keys) in everything written to it."""

    def __init__(self, stream: Any, redact: Callable[[str], str]) -> None:
        self._stream, self._redact = stream, redact

    def write(self, text: str) -> int:
        self._stream.write(self._redact(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _section(doc: Dict[str, Any], key: str) -> Dict[str, Any]:
    """``doc[key]`` where it is a mapping, else empty: a state file of another release may lack it."""
    value = doc.get(key)
    return value if isinstance(value, dict) else {}


def endpoint_text(found: List[Dict[str, Any]]) -> str:
    """``sidecar-plugin endpoint``'s lines: base URL and key file per sidecar (the program too, when several)."""
    lines: List[str] = []
    for i, doc in enumerate(found):
        if len(found) > 1:
            lines.append(("\n" if i else "") + f"program:  {doc['program']}")
        lines.append(f"base_url: {doc['base_url']}")
        lines.append(f"key_file: {doc['key_file'] or 'unknown (the listener has not published it yet)'}")
    return "\n".join(lines)


def report_apply(outcome: Any, timeout: float) -> int:
    """Print what apply did and what each sidecar does now; exit 5 when one meant to run does not."""
    for doc in outcome.running:
        print(f"{doc.get('program')}: running (pid {doc.get('pid')}, port {doc.get('port')})")
    for program, doc in outcome.states.items():
        if doc.get("state") == State.STOPPED:
            print(doing_line(program, doc))
    if not outcome.changed:
        print("nothing to do: the files and supervisord already match the profiles")
    down = outcome.down
    if down:
        print(f"sidecar-plugin: apply: the new configuration is in place, but {len(down)} sidecar(s) it "
              f"manages not running (waited up to {timeout:g} s):", file=sys.stderr)
        for program in down:
            print(f"  {doing_line(program, outcome.states[program])}", file=sys.stderr)
    print(f"changed: {'true' if outcome.changed else 'false'}")
    return EXIT_DOWN if down else EXIT_OK
