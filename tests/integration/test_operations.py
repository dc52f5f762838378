"""Operations: apply a changed profile, several sidecars on one host, metrics (real supervisord)."""

import json
import os

import psutil
import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from harness import KEYS, MASTER_KEY, PROFILE, free_port, poll, run_cli, write
from sidecar_plugin.core.render.litellm_yaml import config_version
from test_e2e_litellm import messages, real_sidecar, upstream  # noqa: F401 (a fixture)

pytestmark = pytest.mark.integration


def models_listed(port):
    s = requests.Session()
    s.trust_env = False
    r = s.get(f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=2)
    return sorted(m["id"] for m in r.json()["data"])



def test_apply_unchanged_changed_and_broken(make_sidecar):
    sc = make_sidecar(workers=2)
    sc.start_supervisord()
    first = sc.wait_state("running", 20)

    # 1. nothing changed: nothing restarts, and it says so
    res = sc.apply()
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "changed: false", res.stdout
    assert "nothing to do" in res.stdout
    assert sc.state().pid == first.pid
    assert sc.info()["pid"] == first.pid

    # 2. a changed model and a new tier: validated, workers replaced one at a time (same main pid), new alias served
    old_workers = {p.pid for p in psutil.Process(first.pid).children()}
    write(sc.profile, PROFILE.replace("deepseek/deepseek-v4-flash", "qwen/qwen3-coder") + "  balanced: x/y\n")
    res = sc.apply()
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip().splitlines()[-1] == "changed: true", res.stdout
    assert "passes litellm --validate_config" in res.stdout, res.stdout
    assert "SIGHUP" in res.stdout, res.stdout
    second = sc.state()
    assert second.state.value == "running"
    assert second.pid == first.pid
    assert second.since == first.since
    assert models_listed(sc.port) == ["agentroute-balanced", "agentroute-fast", "agentroute-heavy"]
    with open(os.path.join(sc.out, "litellm.yaml")) as fh:
        assert "openrouter/qwen/qwen3-coder" in fh.read()
    assert not old_workers & {p.pid for p in psutil.Process(first.pid).children()}  # every worker is new
    assert len(sc.marked()) == 3  # the parent and its two workers
    assert second.raw["config_version"] == config_version(open(os.path.join(sc.out, "litellm.yaml"), "rb").read())

    # 2b. a render and `supervisorctl update` by hand leave the old config running; apply sees it and restarts
    write(sc.profile, PROFILE.replace("deepseek/deepseek-v4-flash", "qwen/qwen3-coder") + "  other: x/y\n")
    assert run_cli("render", *sc.render_args, env=KEYS).returncode == 0
    assert sc.ctl("update").returncode == 0
    assert sc.state().pid == second.pid
    write(sc.profile, PROFILE.replace("deepseek/deepseek-v4-flash", "qwen/qwen3-coder") + "  balanced: x/y\n")
    assert run_cli("render", *sc.render_args, env=KEYS).returncode == 0  # the files are the applied ones again
    res = sc.apply()
    assert res.returncode == 0, res.stdout
    assert res.stdout.strip().endswith("changed: false"), res.stdout  # nothing drifted
    write(sc.profile, PROFILE.replace("deepseek/deepseek-v4-flash", "qwen/qwen3-coder") + "  other: x/y\n")
    assert run_cli("render", *sc.render_args, env=KEYS).returncode == 0
    res = sc.apply()
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip().endswith("changed: true"), res.stdout + res.stderr
    assert "agentroute-other" in models_listed(sc.port)
    assert sc.state().pid == second.pid
    assert sc.state().raw["config_version"] == config_version(open(os.path.join(sc.out, "litellm.yaml"), "rb").read())
    write(sc.profile, PROFILE.replace("deepseek/deepseek-v4-flash", "qwen/qwen3-coder") + "  balanced: x/y\n")
    assert sc.apply().returncode == 0
    assert models_listed(sc.port) == ["agentroute-balanced", "agentroute-fast", "agentroute-heavy"]

    # 3. a change LiteLLM's --validate_config refuses: nothing written, the live sidecar untouched
    with open(os.path.join(sc.out, "litellm.yaml"), "rb") as fh:
        good = fh.read()
    live_workers = {p.pid for p in psutil.Process(first.pid).children()}
    write(sc.profile, PROFILE + "  broken: acme/refuse-config\n")
    res = sc.apply("--timeout", "30")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "--validate_config refused" in res.stderr, res.stderr
    assert "nothing was written" in res.stderr, res.stderr
    assert "unknown model" in res.stderr
    assert res.stdout.strip().splitlines()[-1] == "changed: false"
    with open(os.path.join(sc.out, "litellm.yaml"), "rb") as fh:
        assert fh.read() == good
    assert {p.pid for p in psutil.Process(first.pid).children()} == live_workers

    # 3b. a valid change whose new workers do not come up: uvicorn keeps the old ones, apply rolls back
    sc.set_mode({"exit_at_start": True})  # every new worker fails at start
    write(sc.profile, PROFILE + "  broken: acme/fine-model\n")
    res = sc.apply("--timeout", "5")
    sc.set_mode({})
    assert res.returncode == 1, res.stdout + res.stderr
    assert "rolled back" in res.stderr, res.stdout + res.stderr
    with open(os.path.join(sc.out, "litellm.yaml"), "rb") as fh:
        assert fh.read() == good
    third = sc.wait_state("running", 20)
    assert third.pid == sc.info()["pid"] == first.pid
    assert third.raw["config_version"] == config_version(good)
    assert models_listed(sc.port) == ["agentroute-balanced", "agentroute-fast", "agentroute-heavy"]
    # and the next pass of the configuration tool, with the good profile back, finds nothing to do
    write(sc.profile, PROFILE.replace("deepseek/deepseek-v4-flash", "qwen/qwen3-coder") + "  balanced: x/y\n")
    res = sc.apply()
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip().splitlines()[-1] == "changed: false", res.stdout + res.stderr
    assert sc.state().pid == third.pid

    # 4. a changed command (one worker instead of two): supervisord's program is replaced, and apply says why
    res = sc.apply("--workers", "1")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "supervisord: updated agentroute-sidecar" in res.stdout, res.stdout + res.stderr
    assert "needs a restart (workers, worker health-check timeout changed)" in res.stdout, res.stdout
    fourth = sc.state()
    assert fourth.state.value == "running"
    assert fourth.pid != third.pid
    poll(lambda: len(sc.marked()) == 1, 10, what="one process left: no worker of the old tree")


def test_apply_refuses_without_supervisord(tmp_path):
    profile = tmp_path / "p.yaml"
    profile.write_text(PROFILE)
    res = run_cli("apply", "--profile", str(profile), "--out-dir", str(tmp_path / "out"), "--binary", "/bin/true",
                  "-s", "unix://" + str(tmp_path / "nobody.sock"), env={"OPENROUTER_API_KEY": "sk-or-x"})
    assert res.returncode == 1
    assert "cannot reach supervisord" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "out" / "litellm.yaml").exists()


def test_two_profiles_side_by_side_one_listener_and_metrics(make_fleet):
    p1, base = free_port(), free_port()
    fl = make_fleet(profiles={"work": {"port": p1, "models": {"heavy": "anthropic/claude-opus-4.5"}},
                              "play": {"models": {"fast": "deepseek/deepseek-v4-flash"}}}, base_port=base)
    with open(os.path.join(fl.out, "sidecar.conf")) as fh:
        conf = fh.read()
    assert "[group:" not in conf  # each [fcgi-program] is its own group (tests/integration/test_fleet_held.py)
    assert conf.count("[eventlistener:") == 1
    assert "[eventlistener:agentroute-health]" in conf
    fl.start_supervisord()
    work = fl.wait_state_of("agentroute-work", "running", 20)
    play = fl.wait_state_of("agentroute-play", "running", 20)
    assert (work.port, play.port) == (p1, base)
    assert work.listener_pid == play.listener_pid  # one listener watches them all
    assert models_listed(p1) == ["agentroute-heavy"]
    assert models_listed(base) == ["agentroute-fast"]
    assert fl.rpc().supervisor.getProcessInfo("agentroute-work:agentroute-work")["pid"] == work.pid

    # every door shows every sidecar
    res = run_cli("status", "-s", "unix://" + fl.sock)
    assert res.returncode == 0, res.stderr
    assert "agentroute-work" in res.stdout, res.stderr
    assert "agentroute-play" in res.stdout, res.stderr
    res = run_cli("status", "--json", "-s", "unix://" + fl.sock)
    assert sorted(d["program"] for d in json.loads(res.stdout)) == ["agentroute-play", "agentroute-work"]
    res = fl.ctl("sidecar", "status")
    assert res.returncode == 0, res.stdout
    assert res.stdout.count("RUNNING") >= 2, res.stdout
    assert sorted(fl.rpc().sidecar.listPrograms()) == ["agentroute-play", "agentroute-work"]
    assert fl.rpc().sidecar.getState("agentroute-play")["port"] == base

    # one sidecar stops through supervisorctl; the other one is untouched
    res = fl.ctl("sidecar", "stop", "agentroute-play")
    assert res.returncode == 0, res.stdout
    assert fl.wait_state_of("agentroute-play", "stopped", 10)
    assert fl.state_of("agentroute-work").state.value == "running"
    res = run_cli("status", "-s", "unix://" + fl.sock)
    assert res.returncode == 3  # not every sidecar runs
    res = run_cli("start", "--program", "agentroute-play", "--timeout", "20", "-s", "unix://" + fl.sock)
    assert res.returncode == 0, res.stderr
    res = run_cli("stop", "-s", "unix://" + fl.sock)
    assert res.returncode == 2
    assert "name one with --program" in res.stderr

    # metrics: node_exporter's textfile format, one family per figure, each sidecar labelled
    def metrics():
        with open(fl.metrics_file) as fh:
            return {(s.name, tuple(sorted(s.labels.items()))): s.value
                    for fam in text_string_to_metric_families(fh.read()) for s in fam.samples}
    m = poll(lambda: (lambda d: d if d.get(("agentroute_sidecar_starts_total",
                                            (("program", "agentroute-play"),))) == 2 else None)(metrics()),
             10, what="play's second start in the metrics")
    assert m[("agentroute_sidecar_state", (("program", "agentroute-work"), ("state", "running")))] == 1
    assert m[("agentroute_sidecar_state", (("program", "agentroute-work"), ("state", "crashed")))] == 0
    assert m[("agentroute_sidecar_up", (("program", "agentroute-work"),))] == 1
    assert m[("agentroute_sidecar_probe_latency_seconds", (("program", "agentroute-work"),))] > 0
    assert m[("agentroute_sidecar_crashes_total", (("cause", "exited"), ("program", "agentroute-work")))] == 0
    assert oct(os.stat(fl.metrics_file).st_mode & 0o777) == "0o644"

    # a crash shows up by cause, and the restart after it
    os.kill(work.pid, 9)
    poll(lambda: metrics().get(("agentroute_sidecar_crashes_total",
                                (("cause", "exited"), ("program", "agentroute-work")))) == 1, 10, what="a crash")
    poll(lambda: metrics().get(("agentroute_sidecar_restarts_total", (("program", "agentroute-work"),))) == 1,
         10, what="a restart")
    fl.wait_state_of("agentroute-work", "running", 20, pred=lambda s: s.pid != work.pid)


def test_fleet_apply_adds_a_profile_and_changes_one_model(make_fleet):
    base = free_port()
    fl = make_fleet(profiles={"work": {"models": {"heavy": "anthropic/claude-opus-4.5"}}}, base_port=base)
    fl.start_supervisord()
    work = fl.wait_state_of("agentroute-work", "running", 20)
    # a model change inside the group reloads only that sidecar's LiteLLM: its workers (2, the default) are
    # replaced one at a time, the main pid stays
    fl.write_profile("work", {"models": {"heavy": "anthropic/claude-opus-4.5", "fast": "x/y"}})
    res = fl.apply()
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip().endswith("changed: true"), res.stdout + res.stderr
    work2 = fl.state_of("agentroute-work")
    assert work2.pid == work.pid
    assert work2.raw["config_version"] != work.raw["config_version"]
    assert models_listed(base) == ["agentroute-fast", "agentroute-heavy"]
    # a second profile: its own port (the next one from --port), state and log; the listener is replaced
    fl.write_profile("play", {"models": {"fast": "deepseek/deepseek-v4-flash"}})
    res = fl.apply()
    assert res.returncode == 0, res.stdout + res.stderr
    play = fl.wait_state_of("agentroute-play", "running", 20)
    assert play.port == base + 1
    assert os.path.exists(os.path.join(fl.out, "agentroute-play", "litellm.log"))
    work3 = fl.wait_state_of("agentroute-work", "running", 20)
    assert work3.listener_pid == play.listener_pid
    assert work3.port == base
    res = fl.apply()
    assert res.returncode == 0, res.stdout
    assert res.stdout.strip().endswith("changed: false"), res.stdout
    # a model change in one sidecar of the group leaves the other one's process alone
    fl.write_profile("play", {"models": {"fast": "qwen/qwen3-coder"}})
    res = fl.apply()
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip().endswith("changed: true"), res.stdout + res.stderr
    play2 = fl.state_of("agentroute-play")
    assert play2.pid == play.pid
    assert play2.raw["config_version"] != play.raw["config_version"]  # reloaded
    assert fl.state_of("agentroute-work").pid == work3.pid
    assert fl.state_of("agentroute-work").raw["config_version"] == work3.raw["config_version"]


def test_listener_log_is_json_lines_without_secrets(make_sidecar):
    sc = make_sidecar(mode={"print_secrets": True, "exit_at_start": True})
    sc.start_supervisord(wait_state="crashed")
    path = os.path.join(sc.out, "listener.log")
    entries = poll(lambda: (lambda es: es if any("crashed" in e["msg"] for e in es) else None)(
        [json.loads(line) for line in open(path) if line.strip()]), 10, what="the crash in the listener log")
    assert all({"ts", "level", "msg"} <= set(e) for e in entries)
    assert any(e.get("program") == sc.program for e in entries)
    with open(path) as fh:
        text = fh.read()
    from harness import API_KEY
    assert API_KEY not in text
    assert MASTER_KEY not in text
    assert yaml.safe_load(open(os.path.join(sc.out, "litellm.yaml")))  # the keys are still there, 0600


@pytest.mark.e2e
def test_apply_refused_by_the_real_litellm_writes_nothing(make_sidecar, upstream):  # noqa: F811
    """The stand-in's refusal above is its magic model; here LiteLLM's own ``--validate_config`` refuses.

    No profile makes the rendered config one LiteLLM 1.106.2 cannot load (the render writes only what it
    loads), so its loader is made to fail as an operator's environment can: a config bucket named without
    its object key (``LITELLM_CONFIG_BUCKET_NAME``), which ``ProxyConfig.get_config`` refuses. Only apply's
    environment has it: the live sidecar keeps serving, untouched."""
    sc, st = real_sidecar(make_sidecar, upstream, 1, "name: refused\n")
    with open(os.path.join(sc.out, "litellm.yaml"), "rb") as fh:
        good = fh.read()
    live = {st.pid} | {p.pid for p in psutil.Process(st.pid).children(recursive=True)}
    write(sc.profile, open(sc.profile).read().replace("models:\n", "models:\n  extra: qwen/qwen3-coder\n"))
    res = run_cli("apply", *sc.render_args, "-s", "unix://" + sc.sock, "--timeout", "30",
                  env=dict(sc.render_env, LITELLM_CONFIG_BUCKET_NAME="agentroute-test-no-such-bucket"), timeout=300)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "--validate_config refused" in res.stderr, res.stderr
    assert "LITELLM_CONFIG_BUCKET_OBJECT_KEY must be set" in res.stderr, res.stderr  # LiteLLM's own words
    assert "nothing was written" in res.stderr, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "changed: false", res.stdout
    with open(os.path.join(sc.out, "litellm.yaml"), "rb") as fh:
        assert fh.read() == good
    assert {st.pid} | {p.pid for p in psutil.Process(st.pid).children(recursive=True)} == live
    assert sc.state().pid == st.pid
    assert messages(sc.port, "fast").status_code == 200
