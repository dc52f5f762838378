"""docs/deploying.md's Debian section, run as written, as root, with Debian's supervisord.

The section's block is one script: its first lines set the places it uses
(``VENV=/opt/agentroute``, ...). The test gives those a temp folder (and a user
name, a free port and the test's OpenRouter key of its own), and runs every
other line as the page writes it, with bash as root: apt-get, LiteLLM's venv
from PyPI (the pinned version), the plugin's venv from the wheel with
``--no-index``, the ``.pth`` in /usr/local/lib/python3.11/dist-packages,
useradd, render with ``--user`` and ``--binary``, the edits of a copy of
Debian's own supervisord.conf (its socket, log and pid file moved into the temp
folder, its ``[include]`` to the temp ``conf.d/``). Where the page restarts
the service (``systemctl restart supervisor``), the test runs
``/usr/bin/supervisord -n -c $SUPERVISOR/supervisord.conf`` as Debian's unit
does; then the rest of the block. The profile points LiteLLM at the loopback
stand-in for OpenRouter.

Then what the page promises: the port held by supervisord, the key 0640 root
with the user's group, Debian's ``[include]`` kept, a request answered through
the port; LiteLLM's main process SIGKILLed (an OOM kill): supervisord stays up
and the sidecar is running again and answers. Everything installed
system-wide (the ``.pth``, the user and its group) and every process started
is removed in a ``finally``, also when the test fails.
"""

import grp
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import uuid

import psutil
import pytest
import requests

from ecosystem import apt_hint, apt_installs, built_dist, missing, run
from fake_openrouter import FakeOpenRouter
from harness import API_KEY, PROFILE, free_port, poll
from sidecar_plugin.errors import LITELLM_VERSION
from test_docs import SHELL, section_blocks

pytestmark = [pytest.mark.ecosystem, pytest.mark.e2e]

PAGE, SECTION = "docs/deploying.md", "Debian's `supervisor` package"
RESTART = "systemctl restart supervisor"  # the one line the test does itself (no systemd here)
SUPERVISORD = "/usr/bin/supervisord"
DEBIAN_CONF = "/etc/supervisor/supervisord.conf"
PTH = "/usr/local/lib/python3.11/dist-packages/agentroute-sidecar.pth"  # as the page writes it
PACKAGES = ["supervisor", "python3-yaml", "python3-psutil", "python3-requests", "python3-venv", "python3-pip"]
# Debian's supervisord.conf names these machine-wide places; the test's copy moves each into its folder
MOVED = ("/var/run/supervisor.sock", "/var/log/supervisor/supervisord.log", "/var/run/supervisord.pid",
         "childlogdir=/var/log/supervisor", "/etc/supervisor/conf.d/")
ASSIGNMENT = re.compile(r"^(export )?([A-Z_]+)=(\S+)(\s+#.*)?$")


def the_block():
    """(the variable lines, the lines up to the restart, the lines after it) of the section's one shell block."""
    blocks = [body for _, lang, body in section_blocks(PAGE, SECTION) if lang in SHELL]
    assert len(blocks) == 1, f"{PAGE}: {SECTION}: one shell block expected, found {len(blocks)}"
    lines = blocks[0]
    top = 0
    while top < len(lines) and (ASSIGNMENT.match(lines[top]) or lines[top].startswith("#")):
        top += 1
    rest = lines[top:]
    assert RESTART in rest, f"{PAGE}: {SECTION}: no {RESTART!r} line"
    cut = rest.index(RESTART)
    return lines[:top], rest[:cut], rest[cut + 1:]


def places(lines, given):
    """The block's variable lines with the test's values; every variable the page sets must be one it gives."""
    out, names = [], set()
    for line in lines:
        m = ASSIGNMENT.match(line)
        if m:
            names.add(m.group(2))
            line = f"{m.group(1) or ''}{m.group(2)}={given[m.group(2)]}"
        out.append(line)
    assert names == set(given), f"{PAGE}: {SECTION} sets {sorted(names)}, the test gives {sorted(given)}"
    return out


def bash(script, env, cwd, timeout):
    res = run(["bash", "-e", "-x", "-c", "\n".join(script)], env=env, cwd=cwd, timeout=timeout,
              stdin=subprocess.DEVNULL)
    assert res.returncode == 0, f"exit {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-6000:]}"
    return res


def debian_conf_copy(base, supervisor_dir):
    """Debian's supervisord.conf, its machine-wide places moved into ``base``; returns its path."""
    with open(DEBIAN_CONF) as fh:
        text = fh.read()
    absent = [p for p in MOVED if p not in text]
    if absent:
        missing(f"{DEBIAN_CONF} is not Debian's as shipped (no {absent})", False)
    text = (text.replace("/var/run/supervisor.sock", f"{base}/run/supervisor.sock")
            .replace("/var/log/supervisor/supervisord.log", f"{base}/log/supervisord.log")
            .replace("/var/run/supervisord.pid", f"{base}/run/supervisord.pid")
            .replace("childlogdir=/var/log/supervisor", f"childlogdir={base}/log")
            .replace("/etc/supervisor/conf.d/", f"{supervisor_dir}/conf.d/"))
    for folder in (f"{base}/run", f"{base}/log", f"{supervisor_dir}/conf.d"):
        os.makedirs(folder, mode=0o755)
    path = os.path.join(supervisor_dir, "supervisord.conf")
    with open(path, "w") as fh:
        fh.write(text)
    return path


def state(path):
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


def answer(port, key):
    """One Anthropic /v1/messages through the port, as the gateway sends it; the reply's text."""
    s = requests.Session()
    s.trust_env = False
    resp = s.post(f"http://127.0.0.1:{port}/v1/messages", timeout=60,
                  headers={"Authorization": f"Bearer {key}", "anthropic-version": "2023-06-01",
                           "content-type": "application/json"},
                  json={"model": "agentroute-fast", "max_tokens": 64,
                        "messages": [{"role": "user", "content": "ping"}]})
    assert resp.status_code == 200, resp.text
    return "".join(b.get("text", "") for b in resp.json()["content"])


def the_users_processes(user):
    found = []
    for p in psutil.process_iter(["username"]):
        if p.info["username"] == user:
            found.append(p)
    return found


def requirements():
    if os.geteuid() != 0:
        pytest.skip("the page's steps run as root")
    if not os.access(SUPERVISORD, os.X_OK) or not os.path.exists(DEBIAN_CONF):
        missing(f"{SUPERVISORD} not found; {apt_hint('supervisor')}", apt_installs())
    res = run(["dpkg-query", "-W", "-f", "${Package} ${Status}\n"] + PACKAGES)
    installed = {line.split()[0] for line in res.stdout.splitlines() if line.endswith(" installed")}
    if set(PACKAGES) - installed:
        # the page's apt-get asks before installing: the test runs it where it has nothing left to do
        missing(f"not installed: {sorted(set(PACKAGES) - installed)}; {apt_hint(' '.join(PACKAGES))}",
                apt_installs())
    if not os.path.isdir(os.path.dirname(PTH)):
        missing(f"{os.path.dirname(PTH)} does not exist: /usr/bin/python3 is not Debian 12's python3.11", False)
    if os.path.lexists(PTH):
        pytest.skip(f"{PTH} exists (an installation of this package): the test never replaces it")


def test_the_debian_section_runs_as_written_and_survives_a_litellm_kill(tmp_path_factory):
    requirements()
    top, first, then = the_block()
    assert f"'litellm[proxy]=={LITELLM_VERSION}'" in "\n".join(first), "the page installs another LiteLLM"
    wheel = built_dist(tmp_path_factory)["wheel"]
    base = tempfile.mkdtemp(prefix="ar-debian-", dir="/tmp")  # the user must reach it: not pytest's 0700 folder
    user = "ar" + uuid.uuid4().hex[:8]
    upstream, daemon = None, None
    try:
        os.chmod(base, 0o755)
        port = free_port()
        given = {"VENV": f"{base}/opt/agentroute", "LITELLM": f"{base}/opt/litellm",
                 "ETC": f"{base}/etc/agentroute", "SUPERVISOR": f"{base}/etc/supervisor", "RUN_AS": user,
                 "PORT": str(port), "OPENROUTER_API_KEY": API_KEY}
        variables = places(top, given)
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
               "HOME": "/root", **{k: v for k, v in os.environ.items() if k.startswith("PIP_")}}
        env["APT_CONFIG"] = os.path.join(base, "apt.conf")  # another session's apt-get may hold dpkg's lock
        with open(env["APT_CONFIG"], "w") as fh:
            fh.write('DPkg::Lock::Timeout "600";\n')
        clone = os.path.join(base, "clone")  # where the page's commands run: dist/ holds the wheel
        os.makedirs(os.path.join(clone, "dist"))
        shutil.copy(wheel, os.path.join(clone, "dist"))
        etc, out = given["ETC"], given["ETC"] + "/sidecar"
        upstream = FakeOpenRouter(os.path.join(base, "upstream.jsonl")).start()
        conf = debian_conf_copy(base, given["SUPERVISOR"])
        os.makedirs(etc, mode=0o755)
        with open(os.path.join(etc, "profile.yaml"), "w") as fh:
            fh.write(PROFILE + f"api_base: {upstream.base_url}\n")

        done = bash(variables + first, env, clone, timeout=1800)
        assert "not held" not in done.stderr, done.stderr[-2000:]

        # what the steps left: the plugin alone in its venv, imported by Debian's python3 beside Debian's supervisor
        where = run(["/usr/bin/python3", "-c", "import json, supervisor, sidecar_plugin; print(json.dumps("
                     "[supervisor.__file__, sidecar_plugin.__file__]))"], env=env, cwd="/")
        assert where.returncode == 0, where.stderr
        sup, plugin = json.loads(where.stdout)
        assert sup.startswith("/usr/lib/python3/dist-packages/"), sup
        assert plugin.startswith(given["VENV"] + "/"), f"/usr/bin/python3 imports another sidecar_plugin: {plugin}"
        purelib = os.path.dirname(os.path.dirname(plugin))
        assert sorted(n for n in os.listdir(purelib) if n != "__pycache__") == [
            "sidecar_plugin", "sidecar_plugin-0.1.0.dist-info"]
        # the include holds the port itself; the secrets are root's, the user's group reads them
        with open(os.path.join(out, "sidecar.conf")) as fh:
            include = fh.read()
        assert "[rpcinterface:sidecar]" in include, include
        assert "[fcgi-program:agentroute-sidecar]" in include, include
        gid = pwd.getpwnam(user).pw_gid
        assert grp.getgrgid(gid).gr_name == user
        uid = pwd.getpwnam(user).pw_uid
        for name, want in (("litellm.yaml", ("0o640", 0, gid)), ("master.key", ("0o640", 0, gid)),
                           ("litellm.log", ("0o640", 0, gid)), ("sidecar.conf", ("0o644", 0, 0)),
                           ("sidecar.json", ("0o644", 0, 0)), (".", ("0o755", 0, 0)), ("run", ("0o755", uid, gid))):
            st = os.stat(os.path.join(out, name))
            assert (oct(st.st_mode & 0o777), st.st_uid, st.st_gid) == want, name  # as the page says
        # Debian's [include] kept, the ctlplugin in the main file
        with open(conf) as fh:
            text = fh.read()
        sections = re.findall(r"^\[([^]]+)\]", text, re.M)
        assert sections.count("include") == 1, text
        assert f"files = {given['SUPERVISOR']}/conf.d/*.conf" in text, text
        assert sections.count("ctlplugin:sidecar") == 1
        assert f"chown=root:{user}" in text
        assert "chmod=0770" in text

        # the service's start, as Debian's unit does it
        daemon = subprocess.Popen([SUPERVISORD, "-n", "-c", conf], cwd="/", env=env, start_new_session=True,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        state_file = os.path.join(out, "state.json")
        poll(lambda: os.path.exists(f"{base}/run/supervisor.sock") or daemon.poll() is not None, 60,
             what="supervisord's socket")
        assert daemon.poll() is None, "supervisord exited at its start"
        shown = bash(variables + then, env, clone, timeout=900)  # the page's own wait for running
        assert "RUNNING" in shown.stdout, shown.stdout
        assert f"127.0.0.1:{port}" in shown.stdout, shown.stdout
        assert state(state_file).get("state") == "running", state(state_file)
        assert state(state_file).get("port_held", True) is True, state(state_file)

        with open(os.path.join(out, "master.key")) as fh:
            key = fh.read().strip()
        assert answer(port, key) == "pong from deepseek/deepseek-v4-flash"
        first_pid = state(state_file)["pid"]
        assert psutil.Process(first_pid).username() == user
        proc = psutil.Process(daemon.pid)
        listeners = [c for c in getattr(proc, "net_connections", proc.connections)("tcp")  # psutil < 6: connections
                     if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
        assert listeners, "supervisord does not hold the port"

        os.kill(first_pid, signal.SIGKILL)  # what an OOM kill does to LiteLLM's main process
        poll(lambda: state(state_file).get("state") == "running" and state(state_file).get("pid") != first_pid
             or daemon.poll() is not None, 300, what="the sidecar running again after the SIGKILL")
        assert daemon.poll() is None, "supervisord exited after LiteLLM's SIGKILL"
        assert answer(port, key) == "pong from deepseek/deepseek-v4-flash"
    finally:
        if upstream is not None:
            upstream.stop()
        if daemon is not None and daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)  # supervisord stops its programs, then exits
            try:
                daemon.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
                daemon.wait(10)
        left = the_users_processes(user)  # a user of this test's own: whatever still runs as it is ours
        for p in left:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(left, timeout=10)  # userdel refuses a user a process still runs as
        if os.path.lexists(PTH):
            os.unlink(PTH)
        try:
            pwd.getpwnam(user)
            run(["userdel", user])
        except KeyError:
            pass
        try:
            grp.getgrnam(user)
            run(["groupdel", user])
        except KeyError:
            pass
        shutil.rmtree(base, ignore_errors=True)
