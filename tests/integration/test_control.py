"""Query and control through every door: the module, the CLI, supervisorctl and XML-RPC."""

import json
import os

import pytest

from harness import poll, run_cli
from sidecar_plugin.client import (
    BinaryNotFoundError, Sidecar, SidecarStartError, State, StateUnavailable, read_state,
)
from sidecar_plugin.shell.supervisord.supervisor import rpc_proxy

pytestmark = pytest.mark.integration


def client(sc, **kw):
    return Sidecar(state_file=kw.pop("state_file", sc.state_file), program=sc.program,
                   server_url="unix://" + sc.sock, **kw)


def cli(sc, *args, state_file=True):
    extra = ["--state-file", sc.state_file] if state_file else []
    return run_cli(*args, *extra, "-s", "unix://" + sc.sock)


def test_live_state_through_module_cli_ctl_and_rpc(make_sidecar):
    sc = make_sidecar()
    sc.start_supervisord()
    st = sc.wait_state("running", 20)
    c = client(sc)
    assert c.state() is State.RUNNING
    assert c.state() == "running"
    assert c.log_path() == sc.log_file
    assert read_state(sc.state_file).pid == st.pid
    res = cli(sc, "status")
    assert res.returncode == 0, res.stderr
    assert "RUNNING" in res.stdout, res.stderr
    res = cli(sc, "status", "--json")
    assert res.returncode == 0
    assert json.loads(res.stdout)["state"] == "running"
    # no flags at all: the state file is found from the listener's configuration in supervisord
    res = run_cli("status", "--program", sc.program, "-s", "unix://" + sc.sock)
    assert res.returncode == 0, res.stderr
    assert client(sc, state_file=None).state_file == sc.state_file
    res = sc.ctl("sidecar", "status")
    assert res.returncode == 0, res.stdout
    assert "RUNNING" in res.stdout, res.stdout
    doc = sc.rpc().sidecar.getState(sc.program)
    assert doc["state"] == "running"
    assert doc["pid"] == st.pid
    # the listener's own check after its last reap (none yet: absent, XML-RPC has no null); never free while it runs
    assert doc.get("port_free") is not True
    assert sc.rpc().sidecar.listPrograms() == [sc.program]
    res = sc.ctl("help", "sidecar")
    assert "sidecar status" in res.stdout


@pytest.mark.oldest  # tests/integration/test_oldest.py says why
def test_stop_and_start_through_the_module(make_sidecar):
    sc = make_sidecar(workers=2, mode={"setsid_worker": True})
    sc.start_supervisord()
    sc.wait_state("running", 20)
    c = client(sc)
    c.stop(timeout=15)
    assert sc.marked() == []
    assert sc.port_listeners() == []
    assert c.state() is State.STOPPED
    res = cli(sc, "status")
    assert res.returncode == 3
    assert "STOPPED" in res.stdout
    assert sc.ctl("sidecar", "status").returncode == 3
    c.stop(timeout=5)  # no-op when stopped
    c.start(timeout=20)
    assert c.state() is State.RUNNING
    res = cli(sc, "stop", "--timeout", "15")
    assert res.returncode == 0, res.stderr
    assert sc.marked() == []
    assert sc.port_listeners() == []
    res = cli(sc, "start", "--timeout", "20")
    assert res.returncode == 0, res.stderr
    assert "running" in res.stdout, res.stderr
    res = cli(sc, "wait", "--state", "running", "--timeout", "5")
    assert res.returncode == 0


@pytest.mark.oldest  # tests/integration/test_oldest.py says why
def test_ctl_stop_start_wait(make_sidecar):
    sc = make_sidecar(workers=2)
    sc.start_supervisord()
    sc.wait_state("running", 20)
    res = sc.ctl("sidecar", "stop")
    assert res.returncode == 0, res.stdout
    assert "stopped" in res.stdout, res.stdout
    assert "supervisord keeps the port: new connections wait in its queue" in res.stdout, res.stdout  # not "free"
    assert sc.marked() == []
    assert sc.port_listeners() == []
    res = sc.ctl("sidecar", "start", "--timeout", "20")
    assert res.returncode == 0, res.stdout
    assert "running" in res.stdout, res.stdout
    res = sc.ctl("sidecar", "wait", "--timeout", "5")
    assert res.returncode == 0
    # docs/reference.md's order: options, then the program
    res = sc.ctl("sidecar", "stop", "--timeout", "20", sc.program)
    assert res.returncode == 0, res.stdout
    assert "stopped" in res.stdout, res.stdout
    res = sc.ctl("sidecar", "start", "--timeout", "20", sc.program)
    assert res.returncode == 0, res.stdout
    assert "running" in res.stdout, res.stdout
    res = sc.ctl("sidecar", "wait", "--state", "running", "--timeout", "5", sc.program)
    assert res.returncode == 0, res.stdout


def test_start_of_never_healthy_raises_with_log_tail(make_sidecar):
    sc = make_sidecar(mode={"never_healthy": True},
                      render_args=["--health-timeout", "2", "--no-autostart", "--stop-timeout", "5"])
    sc.start_supervisord(wait_state="stopped")
    c = client(sc)
    with pytest.raises(SidecarStartError) as exc:
        c.start()
    assert "did not become healthy within 2 s" in str(exc.value)
    assert any("listening on" in line for line in exc.value.log_tail)
    res = cli(sc, "start")
    assert res.returncode == 1
    assert "did not become healthy" in res.stderr
    assert "Traceback" not in res.stderr


def test_start_with_missing_binary_is_binary_not_found(make_sidecar, tmp_path):
    sc = make_sidecar(render_args=["--no-autostart"])
    os.unlink(os.path.join(sc.dir, "fake-litellm"))
    sc.start_supervisord(wait_state="stopped")
    with pytest.raises(BinaryNotFoundError):
        client(sc).start(timeout=20)


def test_stale_corrupt_and_missing_state_files(make_sidecar, tmp_path):
    sc = make_sidecar()
    sc.start_supervisord()
    sc.wait_state("running", 20)
    # stale: a copy whose heartbeat is 20 s old, as if the listener died
    doc = json.load(open(sc.state_file))
    doc["heartbeat_at"] -= 20
    stale = tmp_path / "stale.json"
    stale.write_text(json.dumps(doc))
    assert Sidecar(state_file=str(stale)).state() is State.CRASHED
    res = run_cli("status", "--state-file", str(stale))
    # the sidecar's own state (the line's second column) is not RUNNING; supervisord's may be
    first = res.stdout.splitlines()[0].split()
    assert res.returncode == 4, res.stdout
    assert "stale" in res.stdout, res.stdout
    assert first[1] != "RUNNING", res.stdout
    res = run_cli("status", "--state-file", str(stale), "--json")
    doc = json.loads(res.stdout)
    assert res.returncode == 4
    assert doc["state"] == "crashed"
    assert doc["recorded_state"] == "running"
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text("{not json")
    assert Sidecar(state_file=str(corrupt)).state() is State.CRASHED
    with pytest.raises(StateUnavailable):
        read_state(str(corrupt))
    assert run_cli("status", "--state-file", str(corrupt)).returncode == 4
    missing = str(tmp_path / "missing.json")
    assert Sidecar(state_file=missing).state() is State.STOPPED
    res = run_cli("status", "--state-file", missing)
    assert res.returncode == 4
    assert "Traceback" not in res.stderr


def test_supervisord_killed_clients_report_not_running(make_sidecar):
    sc = make_sidecar()
    sc.start_supervisord()
    sc.wait_state("running", 20)
    # stop supervisord and its listener, leaving the state file behind (as a crash would)
    os.killpg(sc.proc.pid, 9)
    sc.proc.wait(10)
    c = client(sc, stale_after=1.0)
    poll(lambda: c.state() is State.CRASHED, 10, interval=0.1, what="the stale file to read crashed")
    assert run_cli("status", "--state-file", sc.state_file, "--stale-after", "1").returncode == 4
    assert client(sc).state() is State.RUNNING  # the default limit (15 s) has not passed yet


def test_xmlrpc_over_inet_http_server_with_credentials(make_sidecar):
    import xmlrpc.client

    from harness import free_port
    port = free_port()
    sc = make_sidecar(inet={"port": port, "username": "ops", "password": "s3cret"})
    sc.start_supervisord()
    sc.wait_state("running", 20)
    good = rpc_proxy(f"http://ops:s3cret@127.0.0.1:{port}", env={})
    assert good.sidecar.getState(sc.program)["state"] == "running"
    bad = rpc_proxy(f"http://ops:wrong@127.0.0.1:{port}", env={})
    with pytest.raises(xmlrpc.client.ProtocolError) as refused:
        bad.sidecar.getState(sc.program)
    assert refused.value.errcode == 401
    import subprocess
    import sys
    res = subprocess.run([sys.executable, "-m", "supervisor.supervisorctl", "-c", sc.conf,
                          "-s", f"http://127.0.0.1:{port}", "-u", "ops", "-p", "s3cret", "sidecar", "status"],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "RUNNING" in res.stdout, res.stdout + res.stderr
    c = Sidecar(state_file=None, program=sc.program, server_url=f"http://ops:s3cret@127.0.0.1:{port}")
    assert c.state() is State.RUNNING
    c.stop(timeout=15)
    assert sc.port_listeners() == []


def test_get_state_unknown_program_is_a_fault(make_sidecar):
    import xmlrpc.client
    sc = make_sidecar()
    sc.start_supervisord()
    with pytest.raises(xmlrpc.client.Fault):
        sc.rpc().sidecar.getState("nope")
    res = sc.ctl("sidecar", "status", "nope")
    assert res.returncode != 0
    assert "no sidecar listener" in res.stdout


def test_rendered_include_is_loaded_by_supervisord(make_sidecar):
    sc = make_sidecar(render_args=["--no-autostart"])
    sc.start_supervisord(wait_state=None)
    res = sc.ctl("avail")
    assert res.returncode == 0, res.stdout + res.stderr
    rows = {line.split()[0]: line.split()[1:] for line in res.stdout.splitlines() if line.strip()}
    # name, "in use", autostart: the render's --no-autostart reached supervisord's program
    assert rows.get("agentroute-sidecar", [])[:3] == ["in", "use", "manual"], res.stdout
    assert rows.get("agentroute-sidecar-health", [])[:2] == ["in", "use"], res.stdout


def test_second_listener_for_the_same_state_file_refuses(make_sidecar):
    import subprocess
    import sys
    sc = make_sidecar()
    sc.start_supervisord()
    sc.wait_state("running", 20)
    proc = subprocess.Popen([sys.executable, "-m", "sidecar_plugin", "listen", "--program", sc.program,
                             "--port", str(sc.port), "--state-file", sc.state_file, "--log-file", sc.log_file],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 78
    assert b"refusing to run" in err
    assert b"another listener" in err
    assert out == b""  # nothing but the protocol ever goes to stdout
    assert sc.state().listener_pid == sc.listener_info()["pid"]


def test_a_crash_log_with_escapes_and_control_characters_reads_through_every_door(make_sidecar, tmp_path):
    # LiteLLM colours its banner; one control character in a log tail used to break the XML of getState
    binary = tmp_path / "coloured-crash"
    binary.write_text("#!/bin/sh\nprintf '\\033[1;37mLiteLLM\\033[0m \\001 cannot start\\n'\nexit 1\n")
    binary.chmod(0o755)
    sc = make_sidecar(binary=str(binary), render_args=["--no-autostart"])
    sc.start_supervisord(wait_state="stopped")
    sc.rpc().supervisor.startProcess(sc.program, False)
    st = sc.wait_state("crashed", 30)
    assert any("LiteLLM ? cannot start" in line for line in st.log_tail), st.log_tail
    assert not any(ch in "".join(st.log_tail) for ch in "\x1b\x01")
    doc = sc.rpc().sidecar.getState(sc.program)
    assert doc["state"] == "crashed"
    res = sc.ctl("sidecar", "status")
    assert "cannot start" in res.stdout
    assert "Expat" not in res.stdout + res.stderr
    assert "\x1b" not in res.stdout
    res = cli(sc, "status")
    assert res.returncode == 3
    assert "\x1b" not in res.stdout + res.stderr


def test_get_state_carries_what_xml_rpc_cannot():
    from sidecar_plugin.rpc import xmlrpc_safe

    assert xmlrpc_safe({"a": None, "n": 2**40, "s": "x\x1b[2Jy\x07z", "l": [None, 1]}) == \
        {"n": float(2**40), "s": "xy?z", "l": [1]}
