"""apply ends only when the sidecars it manages are up, and says what a down one is doing (real supervisord).

Converged is not up: an apply that changes only a listener option replaces the
listener alone, and must not print success while the sidecar it watches is
crashed with a retry ahead. A sidecar an operator stopped is left stopped,
and that is no failure.
"""

import json
import os

import pytest

from harness import poll

pytestmark = pytest.mark.integration


def _retrying(sc):
    """The state once the listener has stopped a never-healthy start and scheduled its next try."""
    s = sc.state()
    return s if (s is not None and s.state.value == "crashed" and s.raw.get("supervisor_state") == "STOPPED"
                 and (s.raw.get("retry") or {}).get("next_at")) else None


def test_apply_of_a_listener_option_while_the_sidecar_never_becomes_healthy_fails_and_says_why(make_sidecar):
    sc = make_sidecar(mode={"never_healthy": True},
                      render_args=["--health-timeout", "2", "--retry-delay", "120", "--retry-max-delay", "120"])
    sc.start_supervisord(wait_state=None)
    before = poll(lambda: _retrying(sc), 30, what="crashed with a retry scheduled")
    old_listener = sc.listener_info()["pid"]

    res = sc.apply("--hang-window", "30", "--timeout", "4")  # a listener option: only the listener is replaced

    assert res.returncode == 5, res.stdout + res.stderr
    assert "supervisord: updated agentroute-sidecar-health" in res.stdout, res.stdout
    assert "supervisord: updated agentroute-sidecar\n" not in res.stdout  # the sidecar itself was not touched
    assert res.stdout.strip().splitlines()[-1] == "changed: true", res.stdout  # the new configuration stays
    assert "hang-window: 20 -> 30" in res.stdout, res.stdout
    line = next(x for x in res.stderr.splitlines() if x.strip().startswith("agentroute-sidecar:"))
    assert "crashed" in line, res.stderr
    assert "did not become healthy" in line, res.stderr
    assert "next try at" in line, res.stderr
    assert "Traceback" not in res.stderr
    # what it said came from the new listener, and the configuration was not rolled back
    assert sc.listener_info()["pid"] != old_listener
    assert sc.state().raw["listener_pid"] == sc.listener_info()["pid"]
    assert sc.state().raw["retry"]["next_at"] == before.raw["retry"]["next_at"]
    assert "--hang-window 30" in open(os.path.join(sc.out, "sidecar.conf")).read()
    with open(os.path.join(sc.out, "sidecar.json")) as fh:
        assert json.load(fh)["options"]["hang-window"] == 30


def test_apply_leaves_a_sidecar_an_operator_stopped_stopped_and_succeeds(make_sidecar):
    sc = make_sidecar()
    sc.start_supervisord()
    assert sc.ctl("stop", "agentroute-sidecar:agentroute-sidecar").returncode == 0
    sc.wait_state("stopped", 20)

    res = sc.apply("--hang-window", "30", "--timeout", "10")

    assert res.returncode == 0, res.stdout + res.stderr
    assert "agentroute-sidecar: stopped (an operator's stop" in res.stdout, res.stdout
    assert res.stdout.strip().splitlines()[-1] == "changed: true", res.stdout
    assert sc.state().state.value == "stopped"
    assert sc.info()["statename"] == "STOPPED"

    # the next pass without --hang-window keeps 30: nothing changes, nothing is said about it
    res = sc.apply("--timeout", "10")
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip().splitlines()[-1] == "changed: false", res.stdout + res.stderr
    assert "hang-window" not in res.stdout
    assert "--hang-window 30" in open(os.path.join(sc.out, "sidecar.conf")).read()
