"""Safe anywhere (issue 30): supervisord never falls with the sidecar, whatever its configuration holds.

Stock supervisord binds an ``[fcgi-program]``'s socket again at every spawn
without catching "Address already in use", and while it reads its
configuration: with orphaned workers on the port, or another server there at
boot, supervisord itself exits. So the include carries the plugin that holds
the port (``[rpcinterface:sidecar]``) where render finds supervisord can import
it, and renders a plain ``[program]`` (LiteLLM binds the port) where it cannot.
Each layout goes through every event of the issue with a real supervisord and
the stand-in: supervisord stays up and the sidecar is ``running`` again.
"""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from harness import live_children, poll, run_cli
from sidecar_plugin.names import FD0_MARKER

pytestmark = pytest.mark.integration


def include_alone(sc):
    """supervisord's own file without the plugin section: the include alone, as an operator may have it."""
    sc.plugin_in_main = False
    sc.write_supervisord_conf()
    with open(sc.conf) as fh:
        assert "rpcinterface:sidecar" not in fh.read()


def no_plugin_supervisord(folder):
    """A supervisord whose interpreter cannot import sidecar_plugin (a system supervisord, another venv)."""
    venv = os.path.join(folder, "other-venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=120)
    script = os.path.join(folder, "supervisord")
    with open(script, "w") as fh:
        fh.write(f"#!{venv}/bin/python\nfrom supervisor.supervisord import main\nmain()\n")
    os.chmod(script, 0o755)
    return script


def up(sc):
    """supervisord is still running and answering."""
    return sc.proc is not None and sc.proc.poll() is None and sc._rpc_up()


def running_again(sc, old_pid, timeout=60):
    st = sc.wait_state("running", timeout, pred=lambda s: s.pid is not None and s.pid != old_pid)
    assert up(sc), "supervisord exited"
    return st


def doc(sc):
    with open(sc.state_file) as fh:
        return json.load(fh)


def workers(pid, count):
    return poll(lambda: (lambda found: found if len(found) == count else None)(live_children(pid)), 15,
                what=f"{count} workers")


def every_event(sc, render=None):
    """SIGKILL of the main process, of a worker, restart, update (unchanged, changed), reload.

    ``render(*extra)`` renders the sidecar again with ``extra`` options (default: this venv's CLI)."""
    st = sc.wait_state("running", 30)
    workers(st.pid, 2)

    os.kill(st.pid, signal.SIGKILL)  # an OOM kill: the orphaned workers still hold the socket
    st = running_again(sc, st.pid)

    victim = workers(st.pid, 2)[0]
    victim.kill()
    poll(lambda: up(sc) and victim.pid not in [c.pid for c in workers(st.pid, 2)], 20, what="a worker respawned")
    assert sc.wait_state("running", 5).pid == st.pid

    res = sc.ctl("restart", sc.program, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    st = running_again(sc, st.pid)

    for args in (("reread",), ("update",)):  # nothing changed
        res = sc.ctl(*args, timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
    assert up(sc)
    assert sc.wait_state("running", 5).pid == st.pid

    render = render or (lambda *extra: run_cli("render", *sc.render_args, *extra, env=sc.render_env))
    res = render("--workers", "3")  # a changed group
    assert res.returncode == 0, res.stderr
    for args in (("reread",), ("update",)):
        res = sc.ctl(*args, timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
    st = running_again(sc, st.pid)
    workers(st.pid, 3)

    res = sc.ctl("reload", timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    poll(lambda: up(sc), 30, what="supervisord back after reload")
    running_again(sc, st.pid)


@pytest.mark.oldest  # PyPI's supervisor 4.2.5 too (make test's lowest-versions tier)
def test_include_alone_carries_the_plugin_and_supervisord_survives_every_event(make_sidecar):
    sc = make_sidecar(workers=2)
    with open(os.path.join(sc.out, "sidecar.conf")) as fh:
        conf = fh.read()
    assert "[rpcinterface:sidecar]" in conf
    assert f"[fcgi-program:{sc.program}]" in conf
    include_alone(sc)
    sc.start_supervisord()
    every_event(sc)
    assert sc.supervisord_listens()  # the port is supervisord's, held through all of it
    state = doc(sc)
    assert state["port_held"] is True
    assert state["port_note"] is None


@pytest.mark.oldest
def test_include_alone_where_supervisord_cannot_import_the_plugin(make_sidecar, tmp_path):
    other = no_plugin_supervisord(str(tmp_path))
    sc = make_sidecar(workers=2, render_args=["--supervisord", other])
    res = run_cli("render", *sc.render_args, env=sc.render_env)
    assert res.returncode == 0, res.stderr
    warnings = [line for line in res.stderr.splitlines() if "not held by supervisord" in line]
    assert len(warnings) == 1, res.stderr
    assert "cannot import sidecar_plugin" in warnings[0]
    assert "--supervisord" in warnings[0]
    with open(os.path.join(sc.out, "sidecar.conf")) as fh:
        conf = fh.read()
    assert "rpcinterface:sidecar" not in conf  # it would keep that supervisord from starting
    assert f"[program:{sc.program}]" in conf  # an [fcgi-program] without the plugin could end supervisord
    include_alone(sc)
    sc.start_supervisord()
    every_event(sc)
    state = doc(sc)
    assert state["port_held"] is False
    assert "cannot import sidecar_plugin" in state["port_note"]
    status = run_cli("status", "--state-file", sc.state_file)
    assert "port not held by supervisord" in status.stdout, status.stdout


def test_a_supervisord_whose_python_has_an_earlier_release_still_holds_the_port(tmp_path):
    """An earlier release called the plugin's module "held": render still finds that it loads."""
    from sidecar_plugin.shell.render.plugin_host import check

    old = tmp_path / "site" / "sidecar_plugin"
    earlier = old / "shell" / "supervisord"  # where that release kept "held.py"
    earlier.mkdir(parents=True)
    for package in (old, old / "shell", earlier):
        (package / "__init__.py").write_text("")
    (old / "rpc.py").write_text("def make_rpcinterface(supervisord, **config):\n    return None\n")
    (earlier / "held.py").write_text("def shape_problem():\n    return None\n")
    # the base Python (no venv, so no sidecar_plugin of this tree) with that release on its path
    base = os.path.join(sys.base_prefix, "bin", "python3")
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\n[ "$1" = -E ] && shift\nPYTHONPATH={tmp_path / "site"} exec {base} "$@"\n')
    supervisord = tmp_path / "supervisord"
    supervisord.write_text(f"#!{python}\n")
    for script in (python, supervisord):
        script.chmod(0o755)
    assert check(str(supervisord)).problem == ""
    (earlier / "held.py").unlink()  # the same layout without it: cannot load
    assert "cannot import sidecar_plugin" in check(str(supervisord)).problem

def foreign(port):
    """Another server on the port (bound and listening), owned by the test."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(8)
    return s


@pytest.mark.oldest
@pytest.mark.parametrize("layout", ["plugin", "no-plugin"])
def test_a_foreign_holder_at_boot_never_stops_supervisord(make_sidecar, tmp_path, layout):
    extra = ["--retry-delay", "1"] + (["--supervisord", no_plugin_supervisord(str(tmp_path))]
                                      if layout == "no-plugin" else [])
    sc = make_sidecar(workers=2, render_args=extra)
    include_alone(sc)
    starts_beside_a_foreign_holder(sc, 90)


def starts_beside_a_foreign_holder(sc, timeout):
    """Another server on the port at boot: supervisord starts, the sidecar is crashed naming it, and running
    once the address is free (the listener's retries)."""
    holder = foreign(sc.port)
    try:
        sc.start_supervisord(wait_state=None)
        st = sc.wait_state("crashed", 60, pred=lambda s: bool(s.raw.get("port_holder")))
        assert up(sc)
        assert str(os.getpid()) in st.raw["port_holder"]
    finally:
        holder.close()
    running_again(sc, None, timeout=timeout)


def test_a_foreign_holder_after_a_stop_without_the_plugin(make_sidecar, tmp_path):
    sc = make_sidecar(workers=2, render_args=["--retry-delay", "1", "--supervisord",
                                              no_plugin_supervisord(str(tmp_path))])
    include_alone(sc)
    sc.start_supervisord()
    st = sc.wait_state("running", 30)
    res = sc.ctl("stop", sc.program, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    poll(lambda: not sc.port_listeners(), 30, what="the port free")
    holder = foreign(sc.port)
    try:
        res = sc.ctl("start", sc.program, timeout=120)
        sc.wait_state("crashed", 60, pred=lambda s: bool(s.raw.get("port_holder")))
        assert up(sc)
    finally:
        holder.close()
    running_again(sc, st.pid, timeout=90)


def test_a_program_that_binds_its_own_port_instead_of_supervisords_is_said_within_seconds(make_sidecar, tmp_path):
    """Handed supervisord's socket, a --binary that binds a port of its own (LiteLLM's CLI behind a wrapper
    that claims fd 0) never serves: crashed in seconds with the reason, never an endless starting."""
    binary = tmp_path / "binds-its-own"
    binary.write_text(f"#!/bin/sh\n# {FD0_MARKER}\nexec {sys.executable} -c 'import socket, time\n"
                      "s = socket.socket(); s.bind((\"127.0.0.1\", 0)); s.listen(1); time.sleep(600)'\n")
    binary.chmod(0o755)
    sc = make_sidecar(workers=1, binary=str(binary), render_args=["--retry-delay", "300"])
    sc.start_supervisord(wait_state=None)
    st = sc.wait_state("crashed", 30, pred=lambda s: s.error is not None and "listens on port" in s.error)
    assert "instead of the socket supervisord hands it" in st.error
    assert up(sc)


def test_the_plugin_named_twice_holds_once(make_sidecar):
    """An operator's own section naming the same factory under another name, beside the include's: supervisord
    starts, both namespaces answer, and the port is held once (a SIGKILL is served again)."""
    sc = make_sidecar(workers=2)
    include_alone(sc)
    with open(sc.conf, "a") as fh:
        fh.write("\n[rpcinterface:agentroute]\nsupervisor.rpcinterface_factory = sidecar_plugin.rpc:make_rpcinterface\n")
    sc.start_supervisord()
    st = sc.wait_state("running", 30)
    assert sc.rpc().agentroute.listPrograms() == [sc.program]
    assert sc.rpc().sidecar.getPortHold(sc.program)["port_held"] is True
    os.kill(st.pid, signal.SIGKILL)
    running_again(sc, st.pid)
    assert sc.supervisord_listens()


def test_apply_holds_the_port_only_once_the_running_supervisord_has_loaded_the_plugin(make_sidecar, tmp_path):
    """A supervisord started before its include carried the plugin has none (rpcinterfaces load at its start):
    apply keeps the plain [program] and says what loads it; after `supervisorctl reload`, apply holds the port."""
    other = no_plugin_supervisord(str(tmp_path))
    sc = make_sidecar(workers=2, render_args=["--supervisord", other])
    include_alone(sc)
    sc.start_supervisord()
    st = sc.wait_state("running", 30)
    # the plugin made importable where supervisord runs (here: render is told the supervisord that reads it)
    sc.render_args = [a for a in sc.render_args if a != other and a != "--supervisord"]
    sc.render_args += ["--supervisord", os.path.join(os.path.dirname(sys.executable), "supervisord")]
    res = sc.apply()
    assert res.returncode == 0, res.stdout + res.stderr
    assert "the running supervisord has not loaded the sidecar plugin" in res.stderr, res.stderr
    assert "supervisorctl reload" in res.stderr
    with open(os.path.join(sc.out, "sidecar.conf")) as fh:
        conf = fh.read()
    assert "[rpcinterface:sidecar]" in conf  # loaded at supervisord's next start
    assert f"[program:{sc.program}]" in conf  # an [fcgi-program] without it could end this supervisord
    assert doc(sc)["port_held"] is False
    res = sc.ctl("reload", timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    poll(lambda: up(sc), 30, what="supervisord back after reload")
    st = running_again(sc, st.pid)
    res = sc.apply()
    assert res.returncode == 0, res.stdout + res.stderr
    assert "not held" not in res.stderr, res.stderr
    with open(os.path.join(sc.out, "sidecar.conf")) as fh:
        assert f"[fcgi-program:{sc.program}]" in fh.read()
    st = sc.wait_state("running", 60, pred=lambda s: s.raw.get("port_held") is True)
    os.kill(st.pid, signal.SIGKILL)
    running_again(sc, st.pid)
    assert sc.supervisord_listens()
