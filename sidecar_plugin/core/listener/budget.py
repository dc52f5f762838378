"""A memory budget per worker: which LiteLLM worker to replace, when, and when to back off (pure).

LiteLLM's proxy grows over days until the OOM killer ends it mid-request. The
listener samples each process of the tree (``shell.listener.memory``: PSS) on its own
schedule and feeds the samples here; this decides, as data:

- a worker over the budget is replaced, the largest first, one at a time: the
  next is chosen only once the one asked for has left the tree (the launcher
  starts its replacement, waits until it serves, then lets the old one drain);
- never while the tree has fewer workers than configured (a respawn or a
  replacement still on its way);
- a worker over the budget soon after its birth (within ``settle``) is not
  replaced (its replacement would be as big: a loop): the budget backs off,
  ``backoff`` then doubling up to ``max_backoff``, recorded and said;
- a replacement the launcher refuses or that does not finish in time backs
  off the same way.

The launcher (the main process) is measured and shown, never replaced: it
serves nothing and holds the pages its forked workers share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Optional, Tuple

from sidecar_plugin.core.options.table import DEFAULTS

# --memory-every's default (core.options.table); the settle time and back-off follow from it.
DEFAULT_EVERY = DEFAULTS["memory_every"]


@dataclass(frozen=True)
class Proc:
    """One process of the tree as sampled: its pid, birth (unix time), memory in MB, whether it is a worker."""

    pid: int
    born: float
    mb: float
    worker: bool = True


@dataclass(frozen=True)
class BudgetConfig:
    budget_mb: Optional[float] = None  # None: off (still measured and shown)
    every: float = DEFAULT_EVERY
    workers: int = 1

    @property
    def settle(self) -> float:
        """A worker this young that is over budget was born over it: replacing it would loop."""
        return 6 * self.every

    @property
    def backoff(self) -> float:
        return 30 * self.every

    @property
    def max_backoff(self) -> float:
        return 360 * self.every

    @property
    def replace_timeout(self) -> float:
        """How long a replacement may take: a LiteLLM start (up to 60 s) plus a drain window, and then some."""
        return max(180.0, 30 * self.every)


@dataclass(frozen=True)
class Budget:
    """What the listener knows of the tree's memory and the replacements."""

    procs: Tuple[Proc, ...] = ()
    sampled_at: Optional[float] = None
    replacing: Optional[Tuple[int, float, float]] = None  # (pid, MB, when asked)
    replacements: int = 0
    failures: int = 0
    backoffs: int = 0
    backoff_attempt: int = 0
    backoff_until: Optional[float] = None
    backoff_reason: Optional[str] = None
    last: Optional[Dict[str, Any]] = None  # the last replacement: pid, mb, at, result


@dataclass(frozen=True)
class Replace:
    """Ask the launcher to replace worker ``pid`` (``mb`` over ``budget_mb``)."""

    pid: int
    mb: float
    budget_mb: float


@dataclass(frozen=True)
class Note:
    """A history line (and a log line) worth keeping: ``event`` with its fields."""

    event: str
    fields: Tuple[Tuple[str, Any], ...]


Step = Tuple[Budget, List[Any]]


def workers_of(argv: Any) -> int:
    """The worker count a sidecar's command line asks for (``--num_workers N``; none: 1)."""
    argv = list(argv or ())
    for i, word in enumerate(argv):
        value = argv[i + 1] if word == "--num_workers" and i + 1 < len(argv) else \
            word.partition("=")[2] if word.startswith("--num_workers=") else None
        if value is not None and value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def shown(mb: float) -> float:
    """``mb`` to the tenth, rounded up: a worker over the budget by less than 0.05 MB never reads as at it."""
    return math.ceil(round(mb * 10, 6)) / 10


def on_sample(b: Budget, procs: Tuple[Proc, ...], now: float, cfg: BudgetConfig) -> Step:
    """Record a sample; return what to do about it."""
    b = replace(b, procs=procs, sampled_at=now)
    if b.replacing is not None:
        return _follow(b, now, cfg)
    if cfg.budget_mb is None or (b.backoff_until is not None and now < b.backoff_until):
        return b, []
    workers = [p for p in procs if p.worker]
    over = sorted((p for p in workers if p.mb > cfg.budget_mb), key=lambda p: (-p.mb, p.pid))
    if not over:
        return replace(b, backoff_attempt=0, backoff_until=None, backoff_reason=None), []
    top = over[0]
    if now - top.born < cfg.settle:
        why = f"worker {top.pid} is at {shown(top.mb):g} MB, over the budget of {cfg.budget_mb:g} MB, " \
              f"{now - top.born:.0f} s after its start: replacing it would not help"
        return _back_off(b, now, cfg, "born_over_budget", why, top)
    if len(workers) < cfg.workers:
        return b, []  # a worker is still on its way: never fewer serving than configured
    note = Note("memory_replace", (("pid", top.pid), ("mb", shown(top.mb)), ("budget_mb", cfg.budget_mb)))
    return replace(b, replacing=(top.pid, top.mb, now)), [note, Replace(top.pid, top.mb, cfg.budget_mb)]


def on_answer(b: Budget, pid: int, answer: str, now: float, cfg: BudgetConfig) -> Step:
    """The launcher's answer to ``Replace``: anything but ``accepted`` backs off."""
    if answer == "accepted" or b.replacing is None or b.replacing[0] != pid:
        return b, []
    mb = b.replacing[1]
    b = replace(b, replacing=None, failures=b.failures + 1,
                last={"pid": pid, "mb": round(mb, 1), "at": now, "result": "failed"})
    return _back_off(b, now, cfg, "replace_failed", f"the launcher did not replace worker {pid}: {answer}", None)


def _follow(b: Budget, now: float, cfg: BudgetConfig) -> Step:
    """A replacement under way: done once the old worker left the tree; given up after ``replace_timeout``."""
    assert b.replacing is not None
    pid, mb, asked = b.replacing
    if all(p.pid != pid for p in b.procs):
        last = {"pid": pid, "mb": round(mb, 1), "at": now, "result": "replaced", "seconds": round(now - asked, 1)}
        return replace(b, replacing=None, replacements=b.replacements + 1, last=last), [
            Note("memory_replaced", (("pid", pid), ("mb", round(mb, 1)), ("seconds", round(now - asked, 1))))]
    if now - asked < cfg.replace_timeout:
        return b, []
    b = replace(b, replacing=None, failures=b.failures + 1,
                last={"pid": pid, "mb": round(mb, 1), "at": now, "result": "timeout"})
    return _back_off(b, now, cfg, "replace_timeout",
                     f"worker {pid} was still there {cfg.replace_timeout:.0f} s after its replacement was asked", None)


def _back_off(b: Budget, now: float, cfg: BudgetConfig, reason: str, why: str, proc: Optional[Proc]) -> Step:
    attempt = b.backoff_attempt + 1
    delay = min(cfg.backoff * 2 ** (attempt - 1), cfg.max_backoff)
    b = replace(b, backoffs=b.backoffs + 1, backoff_attempt=attempt, backoff_until=now + delay,
                backoff_reason=why)
    fields: List[Tuple[str, Any]] = [("reason", reason), ("message", why), ("delay", delay)]
    if proc is not None:
        fields += [("pid", proc.pid), ("mb", shown(proc.mb)), ("budget_mb", cfg.budget_mb)]
    return b, [Note("memory_backoff", tuple(fields))]


def document(b: Budget, cfg: BudgetConfig, measure: str) -> Dict[str, Any]:
    """The state file's ``memory`` field."""
    return {
        "budget_mb": cfg.budget_mb, "measure": measure, "every": cfg.every, "sampled_at": b.sampled_at,
        "processes": [{"pid": p.pid, "role": "worker" if p.worker else "main", "mb": round(p.mb, 1),
                       "born": p.born} for p in b.procs],
        "replacing": None if b.replacing is None else {"pid": b.replacing[0], "mb": round(b.replacing[1], 1),
                                                       "asked_at": b.replacing[2]},
        "replacements": b.replacements, "failures": b.failures, "backoffs": b.backoffs, "last": b.last,
        "backoff": {"attempt": b.backoff_attempt, "until": b.backoff_until, "reason": b.backoff_reason},
    }


def restored(doc: Any) -> Budget:
    """The counters a previous listener recorded (a restarted listener carries them on)."""
    mem = doc.get("memory") if isinstance(doc, dict) else None
    if not isinstance(mem, dict):
        return Budget()
    counts = {k: mem.get(k) for k in ("replacements", "failures", "backoffs")}
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts.values()):
        return Budget()
    return Budget(last=mem.get("last") if isinstance(mem.get("last"), dict) else None, **counts)  # type: ignore


MEMORY_FAMILIES = (
    ("memory_bytes", "gauge", "memory of each process of the sidecar's tree (PSS), by pid and role (main, worker)"),
    ("memory_budget_bytes", "gauge", "the memory budget per worker (absent when off)"),
    ("memory_replacements_total", "counter", "workers replaced for going over the memory budget"),
    ("memory_failures_total", "counter", "replacements asked for that did not happen (refused or timed out)"),
    ("memory_backoffs_total", "counter", "times the memory budget backed off (a worker over it soon after its start)"),
    ("memory_backoff_until_timestamp_seconds", "gauge", "unix time the memory budget's back-off ends, 0 when none"),
)


def memory_samples(name: str, doc: Any, lab: str, prefix: str) -> List[str]:
    """Prometheus samples of one family of ``MEMORY_FAMILIES`` from a state document (none without ``memory``)."""
    mem = doc.get("memory") if isinstance(doc, dict) else None
    if not isinstance(mem, dict):
        return []
    if name == "memory_bytes":
        return [f'{prefix}memory_bytes{{{lab},pid="{int(p["pid"])}",role="{p["role"]}"}} '
                f'{float(p["mb"]) * 1048576!r}' for p in mem.get("processes") or []
                if isinstance(p, dict) and p.get("role") in ("main", "worker")]
    if name == "memory_budget_bytes":
        budget = mem.get("budget_mb")
        return [f"{prefix}{name}{{{lab}}} {float(budget) * 1048576!r}"] if isinstance(budget, (int, float)) else []
    if name == "memory_backoff_until_timestamp_seconds":
        return [f"{prefix}{name}{{{lab}}} {float((mem.get('backoff') or {}).get('until') or 0)!r}"]
    return [f"{prefix}{name}{{{lab}}} {int(mem.get(name[len('memory_'):-len('_total')]) or 0)}"]
