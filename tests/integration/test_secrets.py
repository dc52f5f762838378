"""Secrets audit: recognisable keys go through every path; they stay in the 0600 files only."""

import json
import os
import stat

import pytest

from harness import API_KEY, MASTER_KEY, metric_samples, poll, run_cli

pytestmark = pytest.mark.integration
SECRETS = (API_KEY, MASTER_KEY)


def files_with_secrets(root):
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            try:
                data = open(path, "rb").read()
            except OSError:
                continue
            if any(s.encode() in data for s in SECRETS):
                found[path] = stat.S_IMODE(os.stat(path).st_mode)
    return found


def test_keys_appear_only_in_owner_only_files(make_sidecar, tmp_path):
    # a sidecar that prints its keys at start, never becomes healthy (health timeout), then crashes
    sc = make_sidecar(workers=2, mode={"print_secrets": True, "never_healthy": True},
                      render_args=["--health-timeout", "2", "--metrics-file", str(tmp_path / "m.prom")])
    sc.start_supervisord(wait_state=None)
    st = sc.wait_state("crashed", 20)
    assert st.log_tail
    assert any("[REDACTED]" in line for line in st.log_tail)
    poll(lambda: sc.info()["statename"] == "STOPPED", 20, what="stopped after the health timeout")
    # then a crash at start, printing its keys again
    sc.set_mode({"print_secrets": True, "exit_at_start": True})
    sc.rpc().supervisor.startProcess(sc.program, False)
    poll(lambda: sc.info()["statename"] == "FATAL", 30, what="FATAL")
    sc.wait_state("crashed", 10, pred=lambda s: s.supervisor_state == "FATAL")
    outputs = [
        run_cli("status", "--json", "--state-file", sc.state_file),
        run_cli("status", "--state-file", sc.state_file),
        run_cli("start", "--timeout", "5", "--state-file", sc.state_file, "-s", "unix://" + sc.sock),
        sc.ctl("sidecar", "status"),
        sc.ctl("status"),
        sc.ctl("tail", sc.program + "-health", "stderr"),
        sc.apply(),
    ]
    # nothing changed, but the sidecar is down: apply says what it does (its error and log included), exit 5
    assert outputs[-1].returncode == 5, outputs[-1].stderr
    assert "agentroute-sidecar: crashed" in outputs[-1].stderr, outputs[-1].stderr
    for res in outputs:
        for secret in SECRETS:
            assert secret not in res.stdout, res.args
            assert secret not in res.stderr, res.args
    rpc_state = json.dumps(sc.rpc().sidecar.getState(sc.program))
    assert not any(s in rpc_state for s in SECRETS)
    leaks = files_with_secrets(sc.dir)
    assert leaks, "the 0600 files hold the keys"
    assert {os.path.basename(p) for p in leaks} <= {"litellm.yaml", "litellm.log", "master.key"}
    assert all(mode == 0o600 for mode in leaks.values()), leaks
    for name in ("state.json", "history.jsonl", "listener.log", "sidecar.conf"):
        assert os.path.join(sc.out, name) not in leaks
    assert stat.S_IMODE(os.stat(sc.state_file).st_mode) == 0o644
    metrics = (tmp_path / "m.prom").read_text()
    assert not any(s in metrics for s in SECRETS)
    # the crashes by cause are the state file's counts: a health timeout, then the exit at start
    crashes = poll(lambda: crashes_agree(sc, tmp_path / "m.prom"), 10, what="the metrics' crashes as the state's")
    assert crashes["health_timeout"] >= 1, crashes
    assert sum(crashes.values()) >= 2, crashes


def crashes_agree(sc, path):
    """The metrics' ``crashes_total`` by cause once they are the state file's counters (written after it)."""
    samples = metric_samples(path.read_text())
    got = {dict(labels)["cause"]: value for (name, labels), value in samples.items()
           if name == "agentroute_sidecar_crashes_total" and dict(labels)["program"] == sc.program}
    return got if got == sc.state().raw["counters"]["crashes"] else None
