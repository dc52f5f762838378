"""Render rules: determinism, modes, prefixes, aliases, no secret outside the 0600 files."""

import configparser
import json
import os
import shlex
import stat
import sys

import yaml

from inprocess import API_KEY, KEYS as ENV, MASTER_KEY, fake_binary, run_main

PROFILE = """name: work
port: 4100
models:
  heavy: anthropic/claude-opus-4.5
  balanced: openrouter/anthropic/claude-sonnet-4.5
  fast: deepseek/deepseek-v4-flash
"""


def setup(tmp_path, text=PROFILE):
    prof = tmp_path / "p.yaml"
    prof.write_text(text)
    return str(prof), str(tmp_path / "out"), fake_binary(str(tmp_path))


def render(prof, out, binary, *extra, env=ENV):
    return run_main("render", "--profile", prof, "--out-dir", out, "--binary", binary, *extra, env=env)


def read_conf(out):
    cp = configparser.RawConfigParser()
    cp.read(os.path.join(out, "sidecar.conf"))
    return cp


def test_litellm_yaml_entries_sorted_prefixed_and_mode_0600(tmp_path):
    prof, out, binary = setup(tmp_path)
    res = render(prof, out, binary)
    assert res.returncode == 0, res.stderr
    path = os.path.join(out, "litellm.yaml")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    doc = yaml.safe_load(open(path))
    names = [e["model_name"] for e in doc["model_list"]]
    assert names == ["agentroute-balanced", "agentroute-fast", "agentroute-heavy"]
    models = {e["model_name"]: e["litellm_params"]["model"] for e in doc["model_list"]}
    assert models == {"agentroute-balanced": "openrouter/anthropic/claude-sonnet-4.5",
                      "agentroute-fast": "openrouter/deepseek/deepseek-v4-flash",
                      "agentroute-heavy": "openrouter/anthropic/claude-opus-4.5"}
    for e in doc["model_list"]:
        assert e["litellm_params"]["api_key"] == API_KEY
        assert e["litellm_params"]["allowed_openai_params"] == ["thinking", "betas"]
        assert "api_base" not in e["litellm_params"]
    assert doc["general_settings"]["master_key"] == MASTER_KEY
    assert not os.path.exists(os.path.join(out, "master.key"))


def test_api_base_is_passed_when_set(tmp_path):
    prof, out, binary = setup(tmp_path, PROFILE + "api_base: http://127.0.0.1:9/api/v1\n")
    assert render(prof, out, binary).returncode == 0
    doc = yaml.safe_load(open(os.path.join(out, "litellm.yaml")))
    assert {e["litellm_params"]["api_base"] for e in doc["model_list"]} == {"http://127.0.0.1:9/api/v1"}


def files_in(folder):
    """{path under folder: bytes} of every file below it (the folders are not compared, only what they hold)."""
    return {os.path.relpath(os.path.join(d, n), folder): open(os.path.join(d, n), "rb").read()
            for d, _, names in os.walk(folder) for n in names}


def test_rerender_is_byte_identical_and_reports_unchanged(tmp_path):
    prof, out, binary = setup(tmp_path)
    env = {"OPENROUTER_API_KEY": API_KEY, "AGENTROUTE_MASTER_KEY": ""}
    first = render(prof, out, binary, env=env)
    assert first.returncode == 0, first.stderr
    snap = files_in(out)
    second = render(prof, out, binary, env=env)
    assert second.returncode == 0
    assert files_in(out) == snap
    assert "changed" in first.stdout
    assert "unchanged" in second.stdout
    assert all(line.startswith("unchanged") for line in second.stdout.splitlines())


def test_generated_master_key_is_0600_sk_prefixed_and_random(tmp_path):
    prof, out, binary = setup(tmp_path)
    env = {"OPENROUTER_API_KEY": API_KEY, "AGENTROUTE_MASTER_KEY": ""}
    assert render(prof, out, binary, env=env).returncode == 0
    key_path = os.path.join(out, "master.key")
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    key = open(key_path).read().strip()
    assert key.startswith("sk-")
    assert len(key) >= 3 + 43  # 32 bytes urlsafe = 43 chars = 256 bits
    doc = yaml.safe_load(open(os.path.join(out, "litellm.yaml")))
    assert doc["general_settings"]["master_key"] == key
    other = tmp_path / "other"
    assert render(prof, str(other), binary, env=env).returncode == 0
    assert open(other / "master.key").read().strip() != key


def test_sidecar_conf_program_and_listener(tmp_path):
    prof, out, binary = setup(tmp_path)
    assert render(prof, out, binary, "--workers", "2", "--stop-timeout", "7").returncode == 0
    cp = read_conf(out)
    prog = cp["fcgi-program:agentroute-sidecar"]
    argv = shlex.split(prog["command"])
    assert argv[0] == binary
    assert os.path.isabs(argv[0])
    assert argv[1:] == ["--config", os.path.join(out, "litellm.yaml"), "--host", "127.0.0.1",
                        "--port", "4100", "--num_workers", "2", "--timeout_worker_healthcheck", "60"]
    assert prog["stopasgroup"] == "true"
    assert prog["killasgroup"] == "true"
    # the drain window: LiteLLM drains for 7 s, supervisord kills only after a margin for its shutdown
    assert prog["stopwaitsecs"] == "12"
    assert 'GRACEFUL_SHUTDOWN_TIMEOUT="7"' in prog["environment"]
    assert prog["stdout_logfile"] == os.path.join(out, "litellm.log")
    assert prog["redirect_stderr"] == "true"
    assert prog["stdout_logfile_maxbytes"]
    assert 'LITELLM_LOCAL_MODEL_COST_MAP="True"' in prog["environment"]
    lis = cp["eventlistener:agentroute-sidecar-health"]
    largv = shlex.split(lis["command"])
    assert os.path.isabs(largv[0])
    assert "listen" in largv
    for opt, val in (("--program", "agentroute-sidecar"), ("--port", "4100"),
                     ("--state-file", os.path.join(out, "state.json")),
                     ("--log-file", os.path.join(out, "litellm.log"))):
        assert largv[largv.index(opt) + 1] == val
    assert set(lis["events"].split(",")) == {"PROCESS_STATE", "TICK_5", "REMOTE_COMMUNICATION"}
    # supervisord owns the listening socket; the listener probes the tree's private health socket
    assert prog["socket"] == "tcp://127.0.0.1:4100"
    assert int(prog["socket_backlog"]) >= 1024
    assert "SIDECAR_HEALTH_SOCKET=" in prog["environment"]
    assert largv[largv.index("--port-owner") + 1] == "supervisord"


def test_litellm_entry_point_runs_the_launcher_with_its_own_interpreter(tmp_path):
    prof, out, _ = setup(tmp_path)
    entry = tmp_path / "venv" / "bin" / "litellm"
    entry.parent.mkdir(parents=True)
    entry.write_text("#!/opt/ll/bin/python3.12\nimport sys\nfrom litellm import run_server\nsys.exit(run_server())\n")
    entry.chmod(0o755)
    assert render(prof, out, str(entry), "--workers", "2").returncode == 0
    # supervisord's command names only launch.json (a worker count or binary changed there is no `update`)
    command = shlex.split(read_conf(out)["fcgi-program:agentroute-sidecar"]["command"])
    launch = os.path.join(out, "launch.json")
    assert command[0] == os.path.abspath(sys.executable)  # this package's: the launcher then runs LiteLLM's
    assert command[2:] == ["--launch", launch]
    assert "--num_workers" not in command
    argv = json.load(open(launch))["argv"]
    assert argv[0] == "/opt/ll/bin/python3.12"
    assert argv[1] == command[1]
    assert argv[1].endswith(os.path.join("shell", "litellm_launch"))
    assert os.path.isfile(os.path.join(argv[1], "__main__.py"))
    assert argv[2:4] == ["--config", os.path.join(out, "litellm.yaml")]
    assert "--num_workers" in argv
    assert oct(os.stat(launch).st_mode & 0o777) == "0o644"  # paths and flags: no secret


def test_ipv6_host_keeps_litellm_owning_the_port(tmp_path):
    prof, out, binary = setup(tmp_path)
    assert render(prof, out, binary, "--host", "::1").returncode == 0
    cp = read_conf(out)
    assert "fcgi-program:agentroute-sidecar" not in cp
    assert "program:agentroute-sidecar" in cp
    assert "--port-owner" not in cp["eventlistener:agentroute-sidecar-health"]["command"]


def test_defaults_are_two_workers_and_a_sixty_second_drain(tmp_path):
    prof, out, binary = setup(tmp_path)
    assert render(prof, out, binary).returncode == 0
    prog = read_conf(out)["fcgi-program:agentroute-sidecar"]
    argv = shlex.split(prog["command"])
    assert argv[argv.index("--num_workers") + 1] == "2"
    assert int(argv[argv.index("--timeout_worker_healthcheck") + 1]) > 14  # LiteLLM's start with 2 workers
    assert 'GRACEFUL_SHUTDOWN_TIMEOUT="60"' in prog["environment"]
    assert int(prog["stopwaitsecs"]) > 60


def test_one_worker_has_no_num_workers_flag_and_cli_port_wins(tmp_path):
    prof, out, binary = setup(tmp_path)
    assert render(prof, out, binary, "--port", "4555", "--workers", "1").returncode == 0
    argv = shlex.split(read_conf(out)["fcgi-program:agentroute-sidecar"]["command"])
    assert "--num_workers" not in argv
    assert argv[argv.index("--port") + 1] == "4555"


def test_no_secret_in_sidecar_conf_or_stdout(tmp_path):
    prof, out, binary = setup(tmp_path)
    for env in (ENV, {"OPENROUTER_API_KEY": API_KEY, "AGENTROUTE_MASTER_KEY": ""}):
        res = render(prof, out, binary, env=env)
        text = open(os.path.join(out, "sidecar.conf")).read()
        generated = open(os.path.join(out, "master.key")).read().strip() if os.path.exists(
            os.path.join(out, "master.key")) else MASTER_KEY
        for secret in (API_KEY, MASTER_KEY, generated):
            assert secret not in text
            assert secret not in res.stdout
            assert secret not in res.stderr


def test_the_install_hint_pins_the_litellm_setup_cfg_pins():
    """render's hint installs the LiteLLM the suite runs (setup.cfg's ``litellm`` extra), not whatever is newest."""
    from sidecar_plugin.errors import INSTALL_COMMAND, LITELLM_VERSION

    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "setup.cfg"))
    pins = [p for p in cfg["options.extras_require"]["litellm"].split() if p.startswith("litellm")]
    assert pins == [f"litellm[proxy]=={LITELLM_VERSION}"]
    assert INSTALL_COMMAND == f"pipx install 'litellm[proxy]=={LITELLM_VERSION}'"


def test_bad_input_is_one_line_exit_2_no_traceback(tmp_path):
    prof, out, binary = setup(tmp_path, "name: w\nmodels: {Bad: x/y}\n")
    res = render(prof, out, binary)
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1
    assert "Traceback" not in res.stderr
    prof2, out2, binary2 = setup(tmp_path)
    for extra in (["--port", "0"], ["--workers", "0"], ["--program", "a:b"], ["--port", "x"],
                  ["--host", "999.999.999.999"], ["--host", "*"], ["--host", "a;b"], ["--workers", "10**20"],
                  ["--workers", "100000000000000000000"], ["--health-timeout", "1e300"], ["--stop-timeout", "100000"]):
        res = render(prof2, out2, binary2, *extra)
        assert res.returncode == 2, extra
        assert len(res.stderr.strip().splitlines()) == 1
        assert "Traceback" not in res.stderr
    res = render(prof2, out2, binary2, env={"OPENROUTER_API_KEY": "", "AGENTROUTE_MASTER_KEY": ""})
    assert res.returncode == 2
    assert "OPENROUTER_API_KEY is not set" in res.stderr
    res = render(prof2, out2, binary2, env={"OPENROUTER_API_KEY": API_KEY, "AGENTROUTE_MASTER_KEY": "nope"})
    assert res.returncode == 2
    assert "nope" not in res.stderr
    assert not os.path.exists(out2)


def test_user_option_renders_user_and_gives_files_to_it(tmp_path):
    import pwd
    prof, out, binary = setup(tmp_path)
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        nobody = None
    if os.geteuid() != 0 or nobody is None:
        res = render(prof, out, binary, "--user", "no-such-user-xyz")
        assert res.returncode == 2
        assert "no such user" in res.stderr
        return
    # The layout under --user (root keeps the include and the folder; the user's group reads the
    # secrets) is tested with a user of its own in test_hostile.py; nobody's group is usually shared.
    others = [p.pw_name for p in pwd.getpwall() if p.pw_gid == nobody.pw_gid and p.pw_uid != nobody.pw_uid]
    res = render(prof, out, binary, "--user", "nobody")
    if others:
        assert res.returncode == 2
        assert "shared" in res.stderr
        assert not os.path.exists(out)
    else:
        assert res.returncode == 0, res.stderr
        cp = read_conf(out)
        assert cp["fcgi-program:agentroute-sidecar"]["user"] == "nobody"
        assert cp["eventlistener:agentroute-sidecar-health"]["user"] == "nobody"
        assert os.stat(os.path.join(out, "sidecar.conf")).st_uid == 0
        assert stat.S_IMODE(os.stat(os.path.join(out, "litellm.yaml")).st_mode) == 0o640
    res = render(prof, out, binary, "--user", "no-such-user-xyz")
    assert res.returncode == 2
    assert "no such user" in res.stderr
