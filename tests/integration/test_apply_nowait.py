"""Apply without a wait (issue 31 item 2): what needs a new tree is replaced in place, the old workers serving.

The real launcher serves the light app (``light_app``; its import made slow in
the re-executed image), clients keep their connections alive as the gateway's
Go transport does, and each test measures the longest a short request took
during the apply against a quiet window of the same traffic (``test_nowait.judged``).
"""

import glob
import os
import subprocess
import sys
import time

import psutil
import pytest

from harness import MASTER_KEY, poll, run_cli
from test_memory_budget import HERE, light_binary
from test_nowait import FAST, IMPORT, QUIET, alive, judged
from test_port import started
from traffic import Traffic

pytestmark = pytest.mark.integration

STREAM = 20.0  # seconds: a stream in flight from before the apply until after it


def light(make_sidecar, tmp_path, workers=2):
    return make_sidecar(workers=workers, binary=light_binary(str(tmp_path)),
                        env={"SIDECAR_APP": "light_app:app", "PYTHONPATH": HERE})


def flowing(sc):
    """Kept-alive traffic and a long stream, flowing; return it and the quiet window's longest wait."""
    traffic = Traffic(sc.port, MASTER_KEY, FAST, rate=10, streams=(STREAM,), keepalive=True).start()
    poll(lambda: traffic.short["ok"] >= 5, 15, what="traffic flowing")
    t0 = time.monotonic()
    time.sleep(QUIET)  # the quiet window the traffic runs through (a measurement, not a synchronisation)
    return traffic, traffic.longest_between(t0, time.monotonic())


def kids(pid):
    return {c.pid for c in psutil.Process(pid).children() if alive(c.pid)}


def replaced_in_place(sc, st, old, res, workers):
    """The apply said so, the pid stayed (supervisord saw no exit), only new workers serve, the include unchanged."""
    assert res.returncode == 0, res.stdout + res.stderr
    assert "replacing its tree in place" in res.stdout, res.stdout
    assert "needs a restart" not in res.stdout, res.stdout
    assert "supervisord: updated" not in res.stdout, res.stdout
    now = sc.state()
    assert now.state.value == "running"
    assert now.pid == st.pid
    poll(lambda: len(kids(st.pid)) == workers, 30, what=f"{workers} workers")
    assert not kids(st.pid) & old
    assert not any(alive(p) for p in old)
    log = open(sc.log_file).read()
    assert "the new workers serve: draining the previous ones" in log, log[-3000:]


def test_apply_of_the_worker_count_replaces_the_tree_in_place(make_sidecar, tmp_path):
    sc = light(make_sidecar, tmp_path)
    st = started(sc)
    old = kids(st.pid)
    include = open(os.path.join(sc.out, "sidecar.conf")).read()
    sc.set_mode({"import_seconds": IMPORT})  # the new image's import is slow: requests must not wait for it
    traffic, quiet = flowing(sc)
    asked_at = time.monotonic()
    res = sc.apply("--workers", "3")
    replaced_in_place(sc, st, old, res, 3)
    assert "workers changed" in res.stdout, res.stdout
    assert open(os.path.join(sc.out, "sidecar.conf")).read() == include  # supervisord had nothing to update
    assert "--num_workers 3" in " ".join(psutil.Process(st.pid).cmdline())
    judged("apply --workers 2 -> 3", traffic, quiet, asked_at, IMPORT)
    again = sc.apply("--workers", "3")  # converged: nothing to do the second time
    assert again.returncode == 0, again.stdout + again.stderr
    assert "in place" not in again.stdout, again.stdout
    assert sc.state().pid == st.pid


def other_install(folder):
    """A second Python install (a venv over this one's packages): the interpreter another --binary names."""
    venv = os.path.join(folder, "other-venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=120)
    site = glob.glob(os.path.join(venv, "lib", "python*", "site-packages"))[0]
    with open(os.path.join(site, "this-install.pth"), "w") as fh:
        fh.write("\n".join(p for p in sys.path if p.endswith("site-packages")) + "\n")
    bin_dir = os.path.join(folder, "other-bin")
    os.makedirs(bin_dir)
    path = os.path.join(bin_dir, "litellm-light")
    with open(path, "w") as fh:
        fh.write(f"#!{venv}/bin/python\n# stands for litellm's entry point of another install\n")
    os.chmod(path, 0o755)
    return path, os.path.join(venv, "bin", "python")


def test_apply_of_another_binary_replaces_the_tree_in_place(make_sidecar, tmp_path):
    sc = light(make_sidecar, tmp_path)
    binary, python = other_install(str(tmp_path))
    st = started(sc)
    old = kids(st.pid)
    sc.set_mode({"import_seconds": IMPORT})
    traffic, quiet = flowing(sc)
    asked_at = time.monotonic()
    res = sc.apply("--binary", binary)
    replaced_in_place(sc, st, old, res, 2)
    assert "binary changed" in res.stdout, res.stdout
    assert psutil.Process(st.pid).cmdline()[0] == python  # the same pid runs the other install's interpreter
    judged("apply --binary (another install)", traffic, quiet, asked_at, IMPORT)


def test_apply_to_one_worker_is_a_stop_then_start_and_says_so(make_sidecar, tmp_path):
    sc = light(make_sidecar, tmp_path)
    st = started(sc)
    res = sc.apply("--workers", "1")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "cannot be replaced in place (it runs one worker" in res.stdout, res.stdout
    assert "needs a restart (workers" in res.stdout, res.stdout
    now = sc.state()
    assert now.state.value == "running"
    assert now.pid != st.pid


def test_a_render_that_update_left_behind_is_replaced_in_place_by_the_next_apply(make_sidecar, tmp_path):
    # render then `supervisorctl update`: the include is the same, so supervisord restarts nothing, and the
    # record already says 3 workers: only the live launcher's argv tells apply
    sc = light(make_sidecar, tmp_path)
    st = started(sc)
    old = kids(st.pid)
    res = run_cli("render", *sc.render_args, "--workers", "3", env=sc.render_env)
    assert res.returncode == 0, res.stdout + res.stderr
    sc.ctl("update")
    assert sc.state().pid == st.pid
    res = sc.apply("--workers", "3")
    replaced_in_place(sc, st, old, res, 3)
    assert "(launcher's command changed)" in res.stdout, res.stdout
