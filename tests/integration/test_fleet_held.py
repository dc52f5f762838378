"""Every sidecar of a fleet has the port that never closes (issue 31 item 8), with the stand-in LiteLLM.

A fleet's members are ``[fcgi-program]``s, each its own supervisord group:
a SIGKILL of one member's main process is served by its orphans until the
replacement answers, through clients that keep their connections alive as the
gateway does, and the other member is untouched. The fleet-wide restart that
``supervisorctl restart 'agentroute:*'`` gave is ``sidecar restart all``.
"""

import json
import os
import signal
import sys
import time

import psutil
import pytest

from harness import FAKE_LITELLM, MASTER_KEY, fake_binary, free_port, lives, poll, run_cli
from test_nowait import judged
from traffic import Traffic

pytestmark = pytest.mark.integration

FAST = "agentroute-fast"
START = 4.0  # seconds the replacement's start takes (the stand-in's start_delay): what a request must not wait
QUIET = 3.0  # seconds of traffic measured before the event
MODELS = {"fast": "deepseek/deepseek-v4-flash"}


def two(make_fleet):
    work, play = free_port(), free_port()
    fl = make_fleet(profiles={"work": {"port": work, "models": MODELS}, "play": {"port": play, "models": MODELS}},
                    base_port=free_port())
    fl.start_supervisord(wait_state=None)
    return fl, fl.wait_state_of("agentroute-work", "running", 30), fl.wait_state_of("agentroute-play", "running", 30)


def workers_of(pid, count):
    return poll(lambda: (lambda c: c if len(c) == count else None)(psutil.Process(pid).children()), 15,
                what=f"{count} workers of {pid}")


def flowing(port):
    traffic = Traffic(port, MASTER_KEY, FAST, rate=10, keepalive=True).start()
    poll(lambda: traffic.short["ok"] >= 5, 15, what=f"traffic flowing to {port}")
    return traffic


def test_a_fleet_is_fcgi_programs_without_a_group(make_fleet):
    fl, work, play = two(make_fleet)
    with open(os.path.join(fl.out, "sidecar.conf")) as fh:
        conf = fh.read()
    assert "[group:" not in conf
    assert "[fcgi-program:agentroute-work]" in conf
    assert f"socket=tcp://127.0.0.1:{work.port}" in conf
    info = fl.rpc().supervisor.getProcessInfo("agentroute-play:agentroute-play")
    assert info["pid"] == play.pid
    assert fl.rpc().sidecar.getPortHold("agentroute-work")["port_held"] is True


def test_sigkill_of_one_fleet_member_waits_for_no_start(make_fleet):
    fl, work, play = two(make_fleet)
    orphans = workers_of(work.pid, 2)
    with open(os.path.join(fl.out, "agentroute-work", "fake_mode.json"), "w") as fh:
        json.dump({"start_delay": START}, fh)  # the replacement takes START s before it listens
    traffic, other = flowing(work.port), flowing(play.port)
    t0 = time.monotonic()
    time.sleep(QUIET)  # the quiet window the traffic runs through (a measurement, not a synchronisation)
    quiet = traffic.longest_between(t0, time.monotonic())
    killed_at = time.monotonic()
    os.kill(work.pid, signal.SIGKILL)
    again = fl.wait_state_of("agentroute-work", "running", 30, pred=lambda s: s.pid not in (None, work.pid))
    poll(lambda: not any(lives(p) for p in orphans), 30,
         what="the orphans drained")
    judged("SIGKILL of one fleet member's main process", traffic, quiet, killed_at, START, more=80)
    other.stop()
    assert other.lost == 0, other.summary()
    assert fl.state_of("agentroute-play").pid == play.pid  # the other sidecar untouched
    assert again.pid != work.pid


def test_restart_all_restarts_every_member_the_ports_held(make_fleet):
    fl, work, play = two(make_fleet)
    traffic = flowing(work.port)
    # the stand-in cannot re-execute itself: each is supervisord's stop then start, its port held meanwhile
    res = fl.ctl("sidecar", "restart", "all", timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    for program in ("agentroute-play", "agentroute-work"):
        assert f"{program}: stopped and started by supervisord" in res.stdout, res.stdout
    work2 = fl.wait_state_of("agentroute-work", "running", 30, pred=lambda s: s.pid not in (None, work.pid))
    play2 = fl.wait_state_of("agentroute-play", "running", 30, pred=lambda s: s.pid not in (None, play.pid))
    res = run_cli("restart", "--program", "all", "-s", "unix://" + fl.sock, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count(": running (pid ") == 2, res.stdout
    work3, play3 = fl.state_of("agentroute-work"), fl.state_of("agentroute-play")
    assert work3.pid not in (work.pid, work2.pid)
    assert play3.pid not in (play.pid, play2.pid)
    traffic.stop()
    assert traffic.lost == 0, traffic.summary()
    # supervisorctl's own restart names the programs (each its own group), as 'agentroute:*' did
    res = fl.ctl("restart", "agentroute-play", "agentroute-work", timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    fl.wait_state_of("agentroute-work", "running", 30, pred=lambda s: s.pid not in (None, work3.pid))
    fl.wait_state_of("agentroute-play", "running", 30, pred=lambda s: s.pid not in (None, play3.pid))


def test_apply_turns_a_fleet_of_programs_into_held_ports(make_fleet, tmp_path):
    fl = make_fleet(profiles={"work": {"port": free_port(), "models": MODELS}, "play": {"models": MODELS}},
                    base_port=free_port())
    wrapper = tmp_path / "litellm-wrapper"  # execs the stand-in without saying it serves fd 0: LiteLLM binds
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} -u {FAKE_LITELLM} \"$@\"\n")
    wrapper.chmod(0o755)
    args = [a if a != fake_binary(fl.dir) else str(wrapper) for a in fl.render_args]
    res = run_cli("render", *args, env=fl.render_env)
    assert res.returncode == 0, res.stderr
    with open(os.path.join(fl.out, "sidecar.conf")) as fh:
        assert "[group:agentroute]\nprograms=agentroute-play,agentroute-work\n" in fh.read()
    fl.start_supervisord(wait_state=None)
    before = [fl.wait_state_of(p, "running", 30) for p in ("agentroute-play", "agentroute-work")]
    res = fl.apply()  # the render's own --binary: the stand-in that serves supervisord's socket
    assert res.returncode == 0, res.stdout + res.stderr
    with open(os.path.join(fl.out, "sidecar.conf")) as fh:
        conf = fh.read()
    assert "[group:" not in conf
    for old in before:
        assert f"[fcgi-program:{old.program}]" in conf
        fl.wait_state_of(old.program, "running", 30, pred=lambda s: s.pid not in (None, old.pid))
        assert fl.rpc().sidecar.getPortHold(old.program)["port_held"] is True
    groups = {i["group"] for i in fl.rpc().supervisor.getAllConfigInfo()}
    assert groups == {"agentroute-play", "agentroute-work", "agentroute-health"}


def test_restart_all_replaces_each_members_tree_in_place(make_fleet):
    # the real launcher serving light_app (LiteLLM's app stand-in): each member restarts in place, no request waits
    from sidecar_plugin.shell.processes.inplace import replaceable, workers
    from test_memory_budget import HERE, light_binary

    fl = make_fleet(profiles={"work": {"port": free_port(), "models": MODELS}, "play": {"models": MODELS}},
                    base_port=free_port())
    args = [a if a != fake_binary(fl.dir) else light_binary(fl.dir) for a in fl.render_args]
    res = run_cli("render", *args, env=fl.render_env)
    assert res.returncode == 0, res.stderr
    fl.env = {"SIDECAR_APP": "light_app:app", "PYTHONPATH": HERE}
    fl.start_supervisord(wait_state=None)
    before = {p: fl.wait_state_of(p, "running", 60) for p in ("agentroute-play", "agentroute-work")}
    old = {p: {w.pid for w in workers_of(st.pid, 2)} for p, st in before.items()}
    for program, st in before.items():  # what the restart asks before it goes in place (seen once too early)
        poll(lambda: replaceable(st.pid) and fl.rpc().sidecar.getState(program)["state"] == "running", 15,
             what=f"{program} replaceable")
    traffic = flowing(before["agentroute-work"].port)
    res = fl.ctl("sidecar", "restart", "all", timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("in place") == 2, res.stdout
    traffic.stop()
    assert traffic.lost == 0, traffic.summary()
    for program, st in before.items():
        assert fl.state_of(program).pid == st.pid  # supervisord saw no exit
        assert not workers(st.pid) & old[program]  # the live ones: an exited old worker may be a zombie a moment
