"""The port never closes, with the real LiteLLM (issue 23): parent SIGKILL, restart, worker-count apply.

The default render: supervisord owns the socket, LiteLLM's app runs under
uvicorn from the launcher (no CLI parent). Short requests and a stream flow
through every event; none may be refused. Requests that arrive while no
LiteLLM serves wait in the queue (a start takes 7-60 s here), so the client
waits as long as a start can take. Also measures the sidecar's memory (PSS of
the whole tree), printed with ``-s``.
"""

import os
import signal

import psutil
import pytest

from harness import argv, live_children, lives, poll
from test_e2e_litellm import APPLY_LIMIT, GATEWAY_TOKEN, messages, real_sidecar, upstream  # noqa: F401 (a fixture)
from traffic import Traffic

pytestmark = pytest.mark.e2e

START = 240  # the longest a start of the real LiteLLM may take on a loaded 2-core host


def workers(pid):
    """uvicorn's workers (a multiprocessing resource tracker, if any, is no worker; one that just exited neither)."""
    return [p for p in live_children(pid) if argv(p) and "resource_tracker" not in " ".join(argv(p))]


def tree(pid):
    root = psutil.Process(pid)
    return [root] + root.children(recursive=True)


def memory(pid):
    """(PSS of the whole tree in MB, [(name, RSS MB)] per process)."""
    procs = tree(pid)
    pss = sum(p.memory_full_info().pss for p in procs) / 2**20
    return pss, [(" ".join(p.cmdline()[1:2])[-30:] or p.name(), p.memory_info().rss / 2**20) for p in procs]


def flowing(sc):
    traffic = Traffic(sc.port, GATEWAY_TOKEN, "agentroute-fast", rate=5, streams=(5,))
    traffic.timeout = START
    traffic.start()
    poll(lambda: traffic.short["ok"] >= 5, 60, what="traffic flowing")
    return traffic


def report(event, traffic):
    cut = sum(1 for o in traffic.stream_outcomes.values() if o == "cut")
    print(f"\nROW real LiteLLM | {event} | refused {traffic.short['refused']} | failed {traffic.short['failed']} | "
          f"cut {cut} | longest wait {traffic.longest:.1f} s | ok {traffic.short['ok']}")
    assert traffic.short["refused"] == 0, traffic.summary()
    assert traffic.short["failed"] == 0, traffic.summary()
    assert traffic.short["pending"] == 0, traffic.summary()  # unanswered when the traffic stopped
    assert traffic.short["ok"] == traffic.sent, traffic.summary()  # every request sent was answered
    assert traffic.stream_outcomes == {s: "ok" for s in traffic.streams}, traffic.summary()  # ended, none cut


def test_real_litellm_port_never_refuses(make_sidecar, upstream):  # noqa: F811
    sc, st = real_sidecar(make_sidecar, upstream, 2, "name: port\n")
    conf = open(os.path.join(sc.out, "sidecar.conf")).read()
    assert "[fcgi-program:" in conf
    assert "litellm_launch" in conf
    poll(lambda: len(workers(st.pid)) == 2, 60, what="two workers")
    idle, per = memory(st.pid)
    assert messages(sc.port, "fast").status_code == 200
    pss, after = memory(st.pid)
    print(f"\nMEMORY default sidecar (launcher + 2 workers): PSS {idle:.0f} MB idle, {pss:.0f} MB after a request; "
          "RSS " + ", ".join(f"{r:.0f}" for _, r in per) + " MB idle, " + ", ".join(f"{r:.0f}" for _, r in after))
    assert idle <= 650
    assert pss <= 650

    # SIGKILL of the main process: its workers serve on, the replacement starts, then they drain
    traffic = flowing(sc)
    orphans = workers(st.pid)
    os.kill(st.pid, signal.SIGKILL)
    again = sc.wait_state("running", START, pred=lambda s: s.pid not in (None, st.pid))
    poll(lambda: not any(lives(p) for p in orphans), 90,
         what="the orphans drained")
    traffic.stop()
    report("SIGKILL of the main process", traffic)

    # supervisorctl restart: requests wait in the queue for the start
    traffic = flowing(sc)
    res = sc.ctl("restart", sc.program, timeout=START)
    assert res.returncode == 0, res.stdout + res.stderr
    third = sc.wait_state("running", START, pred=lambda s: s.pid not in (None, again.pid))
    poll(lambda: traffic.short["ok"] >= traffic.sent - 2, START, what="the waiting requests answered")
    traffic.stop()
    report("supervisorctl restart", traffic)

    # apply of a worker-count change (2 -> 3): the tree replaced in place (issue 31), the launcher's pid kept
    traffic = flowing(sc)
    before = {p.pid for p in workers(third.pid)}
    i = sc.render_args.index("--workers")
    sc.render_args[i + 1] = "3"
    res = sc.apply(timeout=APPLY_LIMIT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "replacing its tree in place" in res.stdout, res.stdout
    poll(lambda: (lambda now: len(now) == 3 and not now & before)({p.pid for p in workers(third.pid)}), START,
         what="three new workers under the same launcher, the previous ones gone")
    assert sc.state().pid == third.pid
    traffic.stop()
    report("apply --workers 2 -> 3", traffic)
