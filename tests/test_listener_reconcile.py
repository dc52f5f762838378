"""The listener's TICK reconciliation, against a stand-in for supervisord's XML-RPC (no process)."""

import subprocess

from sidecar_plugin import machine as m
from sidecar_plugin.listener import RECONCILE, Listener, ListenerOptions
from sidecar_plugin.statefile import State


class FakeSupervisor:
    def __init__(self, info):
        self.info = info
        self.supervisor = self

    def getProcessInfo(self, name):
        return dict(self.info)


def dead_pid():
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def listener(tmp_path, info):
    opts = ListenerOptions(program="p", port=1, state_file=str(tmp_path / "state.json"),
                           log_file=str(tmp_path / "p.log"))
    lst = Listener(opts, lambda: FakeSupervisor(info))
    lst.model = m.Model(state=State.RUNNING, since=1.0, supervisor_state="RUNNING", pid=dead_pid())
    return lst


def test_a_difference_seen_on_one_tick_only_is_not_replayed(tmp_path):
    # supervisord already restarted the sidecar; its EXITED/STARTING events are still on their way
    new = dead_pid()
    lst = listener(tmp_path, {"statename": "STARTING", "pid": new})
    before = lst.model
    lst._feed(RECONCILE)
    assert lst.model == before
    # the events arrive: the next tick finds nothing to replay, and nothing was made up meanwhile
    lst.model = m.Model(state=State.STARTING, since=2.0, supervisor_state="STARTING", pid=new)
    lst._feed(RECONCILE)
    assert lst.model.state is State.STARTING and lst.mismatch is None


def test_a_difference_seen_on_two_ticks_is_replayed(tmp_path):
    new = dead_pid()
    lst = listener(tmp_path, {"statename": "STARTING", "pid": new})
    lst._feed(RECONCILE)
    lst._feed(RECONCILE)
    assert lst.model.state is State.STARTING and lst.model.pid == new
