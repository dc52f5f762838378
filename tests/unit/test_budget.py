"""The memory budget's decisions (core.listener.budget), as data: which worker, when, and the back-off."""

import pytest

from sidecar_plugin.core.listener import budget as bg
from sidecar_plugin.core.state.prometheus import render_metrics

CFG = bg.BudgetConfig(budget_mb=300, every=10, workers=2)  # settle 60 s, back-off 300 s doubling to 3600 s
T0 = 1_000_000.0
MAIN = bg.Proc(100, T0 - 5000, 280, worker=False)


def procs(*workers):
    return (MAIN,) + tuple(bg.Proc(pid, born, mb) for pid, born, mb in workers)


def replaces(actions):
    return [a for a in actions if isinstance(a, bg.Replace)]


def notes(actions, event):
    return [dict(a.fields) for a in actions if isinstance(a, bg.Note) and a.event == event]


@pytest.mark.parametrize("why, sample, chosen", [
    ("all under budget", procs((1, T0 - 900, 200), (2, T0 - 900, 290)), None),
    ("the main process over budget is never replaced", (bg.Proc(100, T0 - 900, 900, worker=False),)
     + procs((1, T0 - 900, 200), (2, T0 - 900, 200))[1:], None),
    ("the worker over budget", procs((1, T0 - 900, 200), (2, T0 - 900, 310)), 2),
    ("the largest of two over budget, one at a time", procs((1, T0 - 900, 350), (2, T0 - 900, 320)), 1),
    ("fewer workers than configured: wait for the one on its way", procs((1, T0 - 900, 350)), None),
])
def test_which_worker_is_replaced(why, sample, chosen):
    b, actions = bg.on_sample(bg.Budget(), sample, T0, CFG)
    assert [a.pid for a in replaces(actions)] == ([chosen] if chosen else []), why
    if chosen:
        assert b.replacing == (chosen, next(p.mb for p in sample if p.pid == chosen), T0)
        assert notes(actions, "memory_replace") == [{"pid": chosen, "mb": b.replacing[1], "budget_mb": 300}]


@pytest.mark.parametrize("argv, n", [
    (["python", "/x/litellm_launch", "--config", "c", "--num_workers", "3", "--worker_control"], 3),
    (["litellm", "--num_workers=2"], 2), (["litellm", "--config", "c"], 1), (["x", "--num_workers"], 1),
    (["x", "--num_workers", "many"], 1), ([], 1),
])
def test_the_configured_worker_count_comes_from_the_command_line(argv, n):
    # not the most workers ever seen: a rolling reload or a drain shows one more for a while
    assert bg.workers_of(argv) == n


def test_off_is_measured_but_never_acted_on():
    off = bg.BudgetConfig(budget_mb=None, workers=2)
    b, actions = bg.on_sample(bg.Budget(), procs((1, T0 - 900, 5000), (2, T0 - 900, 5000)), T0, off)
    assert actions == []
    assert len(b.procs) == 3


def test_one_replacement_at_a_time_until_the_old_worker_left_the_tree():
    b, _ = bg.on_sample(bg.Budget(), procs((1, T0 - 900, 350), (2, T0 - 900, 330)), T0, CFG)
    # the replacement serves, the old one drains: three workers, worker 2 over budget too: nothing yet
    b, actions = bg.on_sample(b, procs((1, T0 - 900, 350), (2, T0 - 900, 330), (3, T0 + 5, 90)), T0 + 10, CFG)
    assert actions == []
    assert b.replacing is not None
    b, actions = bg.on_sample(b, procs((2, T0 - 900, 330), (3, T0 + 5, 90)), T0 + 20, CFG)
    assert b.replacing is None
    assert b.replacements == 1
    assert b.last["result"] == "replaced"
    assert notes(actions, "memory_replaced")[0]["pid"] == 1
    b, actions = bg.on_sample(b, procs((2, T0 - 900, 330), (3, T0 + 5, 95)), T0 + 30, CFG)
    assert [a.pid for a in replaces(actions)] == [2]


def test_a_replacement_born_over_budget_backs_off_doubling_then_resets():
    b, _ = bg.on_sample(bg.Budget(), procs((1, T0 - 900, 350), (2, T0 - 900, 100)), T0, CFG)
    b, _ = bg.on_sample(b, procs((2, T0 - 900, 100), (3, T0 + 5, 100)), T0 + 10, CFG)
    # the replacement is over budget 25 s after its start: replacing it again would loop
    b, actions = bg.on_sample(b, procs((2, T0 - 900, 100), (3, T0 + 5, 320)), T0 + 30, CFG)
    assert replaces(actions) == []
    assert b.backoffs == 1
    assert b.backoff_until == T0 + 30 + 300
    assert notes(actions, "memory_backoff")[0]["reason"] == "born_over_budget"
    assert notes(actions, "memory_backoff")[0]["pid"] == 3
    b, actions = bg.on_sample(b, procs((2, T0 - 900, 100), (3, T0 + 5, 330)), T0 + 200, CFG)
    assert actions == []
    assert b.backoffs == 1  # backing off: measured, not acted on
    # after the back-off, an old worker over budget is replaced again
    b, actions = bg.on_sample(b, procs((2, T0 - 900, 100), (3, T0 + 5, 330)), T0 + 340, CFG)
    assert [a.pid for a in replaces(actions)] == [3]
    b, _ = bg.on_sample(b, procs((2, T0 - 900, 100), (4, T0 + 345, 100)), T0 + 350, CFG)
    b, actions = bg.on_sample(b, procs((2, T0 - 900, 100), (4, T0 + 345, 400)), T0 + 360, CFG)
    assert b.backoff_until == T0 + 360 + 600
    assert b.backoff_attempt == 2  # doubled
    b, _ = bg.on_sample(b, procs((2, T0 - 900, 100), (4, T0 + 345, 400)), T0 + 960, CFG)
    b, _ = bg.on_sample(b, procs((2, T0 - 900, 100), (5, T0 + 965, 100)), T0 + 970, CFG)
    b, _ = bg.on_sample(b, procs((2, T0 - 900, 100), (5, T0 + 965, 100)), T0 + 980, CFG)
    assert b.backoff_attempt == 0
    assert b.backoff_until is None  # nothing over budget: the count starts again


def test_the_back_off_is_capped():
    b = bg.Budget(backoff_attempt=20)
    b, _ = bg.on_sample(b, procs((1, T0 - 10, 900), (2, T0 - 900, 100)), T0, CFG)
    assert b.backoff_until == T0 + CFG.max_backoff


def test_a_refused_or_unfinished_replacement_backs_off():
    b, _ = bg.on_sample(bg.Budget(), procs((1, T0 - 900, 350), (2, T0 - 900, 100)), T0, CFG)
    refused, actions = bg.on_answer(b, 1, "no control socket", T0, CFG)
    assert refused.replacing is None
    assert refused.failures == 1
    assert refused.backoff_until == T0 + 300
    assert notes(actions, "memory_backoff")[0]["reason"] == "replace_failed"
    accepted, actions = bg.on_answer(b, 1, "accepted", T0, CFG)
    assert accepted == b
    assert actions == []
    late, actions = bg.on_sample(b, procs((1, T0 - 900, 350), (2, T0 - 900, 100)), T0 + CFG.replace_timeout, CFG)
    assert late.replacing is None
    assert late.last["result"] == "timeout"
    assert late.backoffs == 1


def test_document_metrics_and_restore():
    b, _ = bg.on_sample(bg.Budget(replacements=2), procs((1, T0 - 900, 350), (2, T0 - 900, 100)), T0, CFG)
    doc = {"program": "p", "state": "running", "since": T0, "memory": bg.document(b, CFG, "pss")}
    assert doc["memory"]["replacing"]["pid"] == 1
    assert doc["memory"]["processes"][0]["role"] == "main"
    text = render_metrics([doc], T0)
    assert 'agentroute_sidecar_memory_bytes{program="p",pid="1",role="worker"} 367001600.0' in text
    assert 'agentroute_sidecar_memory_budget_bytes{program="p"} 314572800.0' in text
    assert 'agentroute_sidecar_memory_replacements_total{program="p"} 2' in text
    assert bg.restored(doc).replacements == 2
    assert bg.restored({"memory": {"replacements": -1}}) == bg.Budget()
    bare = render_metrics([{"program": "q", "state": "stopped"}], T0)  # a file from before the budget: no samples
    assert not [line for line in bare.splitlines() if line.startswith("agentroute_sidecar_memory")]


@pytest.mark.parametrize("mb, said", [(300.04, 300.1), (300.01, 300.1), (310.0, 310.0), (310.25, 310.3)])
def test_a_worker_just_over_budget_is_never_said_to_be_at_it(mb, said):
    # seen: a worker at 60.04 MB of PSS was replaced over a 60 MB budget and its event said "mb": 60.0
    b, actions = bg.on_sample(bg.Budget(), procs((1, T0 - 900, 200), (2, T0 - 900, mb)), T0, CFG)
    assert [a.pid for a in replaces(actions)] == [2]
    assert notes(actions, "memory_replace") == [{"pid": 2, "mb": said, "budget_mb": 300}]
    young = procs((1, T0 - 900, 200), (2, T0 - 5, mb))
    _, actions = bg.on_sample(bg.Budget(), young, T0, CFG)
    backoff = notes(actions, "memory_backoff")
    assert [(n["mb"], n["budget_mb"]) for n in backoff] == [(said, 300)]
    assert f"at {said:g} MB, over the budget of 300 MB" in backoff[0]["message"]
