"""A fleet tool: the Ansible playbook in conf/ansible/ applies a profile idempotently.

ansible-core (from PyPI, the test extra) runs the shipped playbook against
localhost with a local connection and a real supervisord (stand-in LiteLLM) that
includes the not-yet-rendered sidecar.conf, as on a fresh host: the first run
reports changed and the sidecar comes up (its master key generated on the
host); the second reports ok and restarts nothing; a changed model reports
changed and restarts it; then ok again; a broken profile fails the play and
leaves the running sidecar alone.
"""

import grp
import json
import os
import re
import stat

import pytest

from ecosystem import PLAYBOOK, VENV_BIN, require_venv_tool, run
from harness import API_KEY, PROFILE, Sidecar, fake_binary

pytestmark = [pytest.mark.ecosystem, pytest.mark.integration]

APPLY_TASK = "Render and apply the profile (sidecar-plugin apply)"
COPY_TASK = "Install the profile"
PIP_TASK = "Install prometheus_client beside LiteLLM (traffic metrics)"  # already in the test venv: ok
KEY_TASK = "Give Prometheus the master key (traffic metrics)"


class FreshHost(Sidecar):
    """A supervisord whose [include] names the sidecar.conf no apply has written yet."""

    def __init__(self, folder):
        self._places(folder, os.path.join(folder, "etc", "sidecar"))
        self.profile = os.path.join(folder, "etc", "profile.yaml")  # where the play installs it
        self.profile_src = os.path.join(folder, "controller-profile.yaml")
        self.binary = fake_binary(folder)
        self.prometheus_key = os.path.join(folder, "prometheus-sidecar.key")  # the key a scrape reads
        self.write_supervisord_conf()
        os.makedirs(os.path.dirname(self.profile))


def playbook(host, tmp_path, profile_text):
    """Run the shipped playbook once; return (rc, {task: status}, recap, output)."""
    with open(host.profile_src, "w") as fh:
        fh.write(profile_text)
    home = tmp_path / "ansible"
    home.mkdir(exist_ok=True)
    (home / "ansible.cfg").write_text("[defaults]\n")
    env = dict(os.environ, ANSIBLE_CONFIG=str(home / "ansible.cfg"), ANSIBLE_HOME=str(home),
               ANSIBLE_LOCAL_TEMP=str(home / "tmp"), ANSIBLE_REMOTE_TEMP=str(home / "tmp"),
               ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_STDOUT_CALLBACK="default",
               ANSIBLE_RETRY_FILES_ENABLED="0")
    extra = {"sidecar_hosts": "all", "sidecar_become": False,
             "ansible_python_interpreter": os.path.join(VENV_BIN, "python"),
             "sidecar_plugin_bin": os.path.join(VENV_BIN, "sidecar-plugin"), "sidecar_profile": host.profile,
             "sidecar_profile_src": host.profile_src, "sidecar_out_dir": host.out,
             "sidecar_server_url": "unix://" + host.sock,
             "sidecar_apply_args": ["--port", str(host.port), "--binary", host.binary, "--workers", "1"],
             "sidecar_prometheus_key_file": host.prometheus_key,
             "sidecar_prometheus_group": grp.getgrgid(os.getgid())[0],
             "openrouter_api_key": API_KEY}  # no agentroute_master_key: generated once on the host
    vars_file = tmp_path / "vars.json"
    vars_file.write_text(json.dumps(extra))
    res = run([os.path.join(VENV_BIN, "ansible-playbook"), "-i", "localhost,", "-c", "local",
               "-e", "@" + str(vars_file), PLAYBOOK], env=env, cwd=str(tmp_path), timeout=300)
    out = res.stdout + res.stderr
    statuses = {}
    for block in re.split(r"^TASK \[", res.stdout, flags=re.M)[1:]:
        name = block.split("]", 1)[0]
        m = re.search(r"^(ok|changed|fatal|skipping): \[localhost\]", block, flags=re.M)
        statuses[name] = m.group(1) if m else None
    m = re.search(r"^localhost\s*:\s*(.*)$", res.stdout, flags=re.M)
    recap = dict(kv.split("=") for kv in m.group(1).split()) if m else {}
    secrets = [API_KEY] + [open(p).read().strip() for p in [os.path.join(host.out, "master.key")] if os.path.exists(p)]
    assert not [k for k in secrets if k in out], "a secret in ansible's output"
    return res.returncode, statuses, {k: int(v) for k, v in recap.items()}, out


@pytest.fixture
def fresh_host(tmp_path):
    folder = tmp_path / "host"
    folder.mkdir()
    host = FreshHost(str(folder))
    try:
        yield host
    finally:
        host.cleanup()


def test_playbook_applies_a_profile_idempotently(fresh_host, tmp_path):
    require_venv_tool("ansible-playbook")
    host = fresh_host
    host.start_supervisord(wait_state=None)
    assert host.rpc().supervisor.getAllProcessInfo() == []  # nothing rendered yet

    # 1. fresh host: the profile is installed, apply renders it and adds the sidecar
    rc, tasks, recap, out = playbook(host, tmp_path, PROFILE)
    assert rc == 0, out
    assert tasks == {PIP_TASK: "ok", COPY_TASK: "changed", APPLY_TASK: "changed", KEY_TASK: "changed"}, out
    assert recap["changed"] == 3, out
    assert recap["failed"] == 0, out
    first = host.wait_state("running", 30)
    with open(os.path.join(host.out, "master.key")) as fh:
        master_key = fh.read()
    assert master_key.startswith("sk-")
    with open(host.prometheus_key) as fh:  # Prometheus' copy, for its scrape of the sidecar's /metrics/
        assert fh.read() == master_key
    assert stat.S_IMODE(os.stat(host.prometheus_key).st_mode) == 0o640
    assert host.info()["pid"] == first.pid
    assert host.health_ok()

    # 2. same profile: ok, nothing restarted
    rc, tasks, recap, out = playbook(host, tmp_path, PROFILE)
    assert rc == 0, out
    assert tasks == {PIP_TASK: "ok", COPY_TASK: "ok", APPLY_TASK: "ok", KEY_TASK: "ok"}, out
    assert recap["changed"] == 0, out
    assert recap["failed"] == 0, out
    assert host.state().pid == first.pid
    assert host.info()["pid"] == first.pid
    with open(os.path.join(host.out, "master.key")) as fh:
        assert fh.read() == master_key  # generated once, kept

    # 3. a changed model: changed, the sidecar restarted with the new config
    changed_profile = PROFILE.replace("deepseek/deepseek-v4-flash", "qwen/qwen3-coder")
    rc, tasks, recap, out = playbook(host, tmp_path, changed_profile)
    assert rc == 0, out
    assert tasks == {PIP_TASK: "ok", COPY_TASK: "changed", APPLY_TASK: "changed", KEY_TASK: "ok"}, out
    second = host.state()
    assert second.state.value == "running"
    assert second.pid != first.pid
    with open(os.path.join(host.out, "litellm.yaml")) as fh:
        assert "openrouter/qwen/qwen3-coder" in fh.read()

    # 4. and ok again
    rc, tasks, recap, out = playbook(host, tmp_path, changed_profile)
    assert rc == 0, out
    assert recap["changed"] == 0, out
    assert tasks[APPLY_TASK] == "ok", out
    assert host.state().pid == second.pid

    # 5. a profile apply refuses (exit 2, one line): the play fails, the sidecar keeps running
    rc, tasks, recap, out = playbook(host, tmp_path, PROFILE + "  Bad Tier: x/y\n")
    assert rc != 0, out
    assert tasks[APPLY_TASK] == "fatal", out
    assert recap["failed"] == 1, out
    assert '"rc": 2' in out, out
    assert host.state().pid == second.pid
    assert host.health_ok()
