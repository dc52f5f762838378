"""Issue 16: hostile input and hostile neighbours (render, apply and the files they write).

Each test names the finding it covers. Tests that need a second, unprivileged
user create one (useradd) and remove it, pass or fail; a profile bomb runs
the CLI in a subprocess whose address space is capped (RLIMIT_AS).
"""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import resource
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap

import pytest
import yaml

from harness import API_KEY, CLI, KEYS, ROOT, fake_binary, poll, run_cli, write

PROFILE = "name: work\nmodels:\n  heavy: anthropic/claude-opus-4.5\n  fast: deepseek/deepseek-v4-flash\n"
GEN_KEY_ENV = {"OPENROUTER_API_KEY": API_KEY, "AGENTROUTE_MASTER_KEY": ""}


# -- helpers -------------------------------------------------------------------------------------------------

@pytest.fixture
def area():
    """A folder under /tmp another user can reach (pytest's tmp_path is root-only), removed afterwards."""
    folder = tempfile.mkdtemp(prefix="sp16-", dir="/tmp")
    os.chmod(folder, 0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def user():
    """A fresh system user with its own group; deleted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a user (useradd)")
    if shutil.which("useradd") is None:
        pytest.skip("no useradd on this machine")
    name = "sp16" + secrets.token_hex(4)
    res = subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin",
                          name], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot create a user: {res.stderr.strip()}")
    try:
        pw = pwd.getpwnam(name)
        yield name, pw.pw_uid, pw.pw_gid
    finally:
        subprocess.run(["userdel", name], capture_output=True)
        subprocess.run(["groupdel", name], capture_output=True)


def as_user(uid: int, gid: int, code: str) -> subprocess.CompletedProcess:
    """Run Python ``code`` as uid/gid (its last line prints a JSON result)."""
    def drop():
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable  # the venv's may be root's
    return subprocess.run([python, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          preexec_fn=drop, timeout=60, cwd="/")


def tried(uid: int, gid: int, actions: dict) -> dict:
    """Run each named statement as the user; map name -> 'ok' or the error's name."""
    body = "import json, os\nout = {}\n"
    for key, stmt in actions.items():
        body += f"try:\n    {stmt}\n    out[{key!r}] = 'ok'\nexcept OSError as e:\n    out[{key!r}] = type(e).__name__\n"
    body += "print(json.dumps(out))\n"
    res = as_user(uid, gid, body)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def render(profile: str, out: str, *extra: str, env=None, binary=None) -> subprocess.CompletedProcess:
    binary = binary or fake_binary(os.path.dirname(out))
    return run_cli("render", "--profile", profile, "--out-dir", out, "--binary", binary, *extra, env=env or KEYS)



def one_line(res: subprocess.CompletedProcess) -> str:
    err = res.stderr.strip()
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err, err
    return err


def run_capped(args, env=None, limit=768 << 20, timeout=60) -> subprocess.CompletedProcess:
    """Run the CLI with its address space capped, so a bomb fails the test instead of the machine."""
    full = dict(os.environ)
    full.update(env or KEYS)
    return subprocess.run(CLI + list(args), capture_output=True, text=True, env=full, timeout=timeout, cwd=ROOT,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)))


def parse_include(path: str):
    """Read an include the way supervisord does; return {section name: process config}."""
    from supervisor.options import ServerOptions, UnhosedConfigParser

    opts = ServerOptions()
    parser = UnhosedConfigParser()
    parser.expansions = opts.environ_expansions
    parser.read(path)
    out = {}
    for group in opts.process_groups_from_parser(parser):
        for pc in group.process_configs:
            out[pc.name] = pc
    return parser, out


def owner_mode(path: str):
    st = os.lstat(path)
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


# -- 1. --user: the user owns nothing root's supervisord reads; root never follows a link ------------------

def test_1_user_reads_its_files_and_owns_nothing_supervisord_reads(area, user):
    name, uid, gid = user
    prof, out = write(os.path.join(area, "p.yaml"), PROFILE), os.path.join(area, "out")
    res = render(prof, out, "--user", name, env=GEN_KEY_ENV)
    assert res.returncode == 0, res.stderr
    conf = os.path.join(out, "sidecar.conf")
    assert owner_mode(conf)[0] == 0
    assert owner_mode(out)[0] == 0
    assert owner_mode(out)[2] & 0o022 == 0
    for secret in ("litellm.yaml", "master.key"):
        assert owner_mode(os.path.join(out, secret)) == (0, gid, 0o640)
    parser, procs = parse_include(conf)
    assert procs["agentroute-sidecar"].uid == uid
    assert procs["agentroute-sidecar-health"].uid == uid
    state_file = os.path.join(out, "run", "state.json")
    assert f"--state-file {state_file}" in procs["agentroute-sidecar-health"].command
    got = tried(uid, gid, {
        "append_conf": f"open({conf!r}, 'a').write('[program:x]\\ncommand=/bin/sh\\n')",
        "rename_conf": f"os.rename({conf!r}, {conf + '.x'!r})",
        "new_in_out": f"open({os.path.join(out, 'x')!r}, 'w')",
        "swap_log": f"os.rename({os.path.join(out, 'litellm.log')!r}, {os.path.join(out, 'old.log')!r})",
        "write_config": f"open({os.path.join(out, 'litellm.yaml')!r}, 'a')",
        "read_config": f"open({os.path.join(out, 'litellm.yaml')!r}).read()",
        "read_key": f"open({os.path.join(out, 'master.key')!r}).read()",
        "read_log": f"open({os.path.join(out, 'litellm.log')!r}).read()",
        "write_state": f"open({state_file!r}, 'w').write('{{}}')",
        "write_history": f"open({os.path.join(out, 'run', 'history.jsonl')!r}, 'a')",
        # LiteLLM's traffic metrics: the launcher, as the user, writes the workers' samples there (issue 33)
        "write_metrics": f"open({os.path.join(out, 'run', 'prometheus', 'counter_1.db')!r}, 'w')",
    })
    assert got == {"append_conf": "PermissionError", "rename_conf": "PermissionError",
                   "new_in_out": "PermissionError", "swap_log": "PermissionError",
                   "write_config": "PermissionError", "read_config": "ok", "read_key": "ok", "read_log": "ok",
                   "write_state": "ok", "write_history": "ok", "write_metrics": "ok"}
    assert owner_mode(os.path.join(out, "run", "prometheus")) == (uid, gid, 0o700)
    # readers keep the documented path
    assert os.path.realpath(os.path.join(out, "state.json")) == state_file


def test_1_out_dir_below_a_folder_the_user_can_change_is_refused(area, user):
    # whoever can write a folder above the out-dir can swap sidecar.conf for one that root's supervisord runs
    name, uid, gid = user
    prof = write(os.path.join(area, "p.yaml"), PROFILE)
    cases = {"group": (0o775, gid), "world": (0o777, 0), "own": (0o755, None)}
    for label, (mode, group) in cases.items():
        parent = os.path.join(area, label)
        os.mkdir(parent)
        os.chown(parent, uid if group is None else 0, gid if group is None else group)
        os.chmod(parent, mode)
        res = render(prof, os.path.join(parent, "out"), "--user", name, binary=fake_binary(area))
        assert "--out-dir" in one_line(res), label
        assert name in res.stderr, label
        assert os.listdir(parent) == [], label
    sticky = os.path.join(area, "sticky")
    os.mkdir(sticky)
    os.chmod(sticky, 0o1777)  # like /tmp: only a file's owner may rename it
    res = render(prof, os.path.join(sticky, "out"), "--user", name, binary=fake_binary(area))
    assert res.returncode == 0, res.stderr


def test_1_render_never_follows_a_link_or_hard_link_as_root(area, user):
    name, uid, gid = user
    prof, out = write(os.path.join(area, "p.yaml"), PROFILE), os.path.join(area, "out")
    victim = write(os.path.join(area, "victim"), "root's\n")
    os.chmod(victim, 0o600)
    assert render(prof, out, "--user", name).returncode == 0
    log = os.path.join(out, "litellm.log")
    os.unlink(log)
    os.symlink(victim, log)  # as if the user had been able to (the old layout gave it the folder)
    err = one_line(render(prof, out, "--user", name))
    assert "litellm.log" in err
    assert "symlink" in err
    assert owner_mode(victim) == (0, 0, 0o600)
    assert open(victim).read() == "root's\n"
    os.unlink(log)
    os.link(victim, log)
    err = one_line(render(prof, out, "--user", name))
    assert "hard link" in err
    assert owner_mode(victim) == (0, 0, 0o600)
    os.unlink(log)
    listener_log = os.path.join(out, "listener.log")  # supervisord appends to it as root
    os.unlink(listener_log)
    os.symlink(victim, listener_log)
    before = {n: owner_mode(os.path.join(out, n)) for n in ("litellm.yaml", "sidecar.conf")}
    err = one_line(render(prof, out, "--user", name))
    assert "listener.log" in err
    assert "symlink" in err
    assert {n: owner_mode(os.path.join(out, n)) for n in before} == before
    assert not os.path.exists(log)


def test_1_fleet_folders_are_never_followed_or_given_away(area, user):
    name, uid, gid = user
    profiles = os.path.join(area, "profiles")
    os.mkdir(profiles)
    for n in ("a", "b"):
        write(os.path.join(profiles, f"{n}.yaml"), PROFILE.replace("work", n))
    out = os.path.join(area, "out")
    victim_dir = os.path.join(area, "etc-like")
    os.mkdir(victim_dir, 0o700)
    os.mkdir(out)
    os.symlink(victim_dir, os.path.join(out, "agentroute-a"))
    res = render(profiles, out, "--user", name)
    err = one_line(res)
    assert "agentroute-a" in err
    assert owner_mode(victim_dir) == (0, 0, 0o700)
    os.unlink(os.path.join(out, "agentroute-a"))
    assert render(profiles, out, "--user", name).returncode == 0
    for n in ("a", "b"):
        folder = os.path.join(out, f"agentroute-{n}")
        assert owner_mode(folder)[0] == 0
        assert owner_mode(os.path.join(folder, "run"))[:2] == (uid, gid)
    _, procs = parse_include(os.path.join(out, "sidecar.conf"))
    assert procs["agentroute-health"].uid == uid
    assert "--state-subdir run" in procs["agentroute-health"].command


# -- 2. profiles: aliases, depth, size of what an error prints --------------------------------------------

def alias_bomb(field: str) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 12):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{','.join([prev] * 9)}]")
    body = "\n".join(lines)
    models = "models:\n  heavy: anthropic/claude-opus-4.5\n"
    return f"{body}\nname: work\n{models}".replace("name: work", "name: *a11") if field == "name" else \
        f"{body}\nname: work\nport: *a11\n{models}"


@pytest.mark.parametrize("field", ["name", "port"])
def test_2_alias_bomb_is_refused_in_bounded_memory(area, field):
    prof = write(os.path.join(area, "bomb.yaml"), alias_bomb(field))
    assert os.path.getsize(prof) < 1000
    res = run_capped(["render", "--profile", prof, "--out-dir", os.path.join(area, "out"),
                      "--binary", fake_binary(area)])
    err = one_line(res)
    assert prof in err
    assert "alias" in err.lower()
    assert not os.path.exists(os.path.join(area, "out"))


def test_2_alias_bomb_in_a_folder_of_profiles(area):
    folder = os.path.join(area, "profiles")
    os.mkdir(folder)
    write(os.path.join(folder, "a.yaml"), PROFILE.replace("work", "a"))
    write(os.path.join(folder, "b.yaml"), alias_bomb("name"))
    res = run_capped(["render", "--profile", folder, "--out-dir", os.path.join(area, "out"),
                      "--binary", fake_binary(area)])
    assert "b.yaml" in one_line(res)


def test_2_deep_json_and_yaml_are_refused_not_a_recursion_error(area):
    deep_json = '{"name": ' + "[" * 200000 + "]" * 200000 + ', "models": {"heavy": "a/b"}}'
    deep_yaml = "name: " + "[" * 100000 + "]" * 100000 + "\nmodels: {heavy: a/b}\n"
    for fname, text in (("deep.json", deep_json), ("deep.yaml", deep_yaml)):
        prof = write(os.path.join(area, fname), text)
        res = run_capped(["render", "--profile", prof, "--out-dir", os.path.join(area, "out"),
                          "--binary", fake_binary(area)])
        err = one_line(res)
        assert "RecursionError" not in err, err
        assert "nested deeper" in err, err


def test_2_an_error_never_prints_an_unbounded_value(area):
    prof = write(os.path.join(area, "big.json"), json.dumps({"name": list(range(150000)), "models": {"h": "a/b"}}))
    res = run_capped(["render", "--profile", prof, "--out-dir", os.path.join(area, "out"),
                      "--binary", fake_binary(area)])
    assert len(one_line(res)) < 400


# -- 3. supervisord include: everything written reads back exactly, or is refused --------------------------

def test_3_newline_in_out_dir_or_profile_name_is_refused_nothing_written(area):
    prof = write(os.path.join(area, "p.yaml"), PROFILE)
    evil = os.path.join(area, "x\n[program:evil]\ncommand=touch pwned\n;")
    err = one_line(render(prof, evil, binary=fake_binary(area)))
    assert "--out-dir" in err
    assert not os.path.exists(evil)
    folder = os.path.join(area, "profiles")
    os.mkdir(folder)
    write(os.path.join(folder, "a\n[program:evil]\ncommand=true\n;.yaml"), PROFILE)
    write(os.path.join(folder, "b.yaml"), PROFILE.replace("work", "b"))
    out = os.path.join(area, "out")
    err = one_line(render(folder, out))
    assert "--profile" in err
    assert not os.path.exists(out)


@pytest.mark.parametrize("piece", [" ;x", " #x", "a;b#c", 'q"uote', "it's", "100%", "%(here)s", "tab\there",
                                   "sp ace", "$HOME", "back\\slash", "ünï"])
def test_3_hostile_paths_round_trip_through_supervisords_parser_or_are_refused(area, piece):
    from sidecar_plugin.names import marker_value

    base = os.path.join(area, "d" + piece)
    os.mkdir(base)
    prof = write(os.path.join(base, "p" + piece + ".yaml"), PROFILE)
    out = os.path.join(base, "out" + piece)
    binary = fake_binary(base)
    res = render(prof, out, "--binary", binary, "--port", "4567")
    if res.returncode != 0:
        assert "\t" in piece or " ;" in piece or " #" in piece, res.stderr
        one_line(res)
        assert not os.path.exists(out)
        return
    _, procs = parse_include(os.path.join(out, "sidecar.conf"))
    import shlex
    prog, lis = procs["agentroute-sidecar"], procs["agentroute-sidecar-health"]
    config = os.path.join(out, "litellm.yaml")
    assert shlex.split(prog.command)[:7] == [binary, "--config", config, "--host", "127.0.0.1", "--port", "4567"]
    assert prog.directory == out
    assert prog.stdout_logfile == os.path.join(out, "litellm.log")
    assert prog.environment["SIDECAR_PLUGIN_TREE"] == marker_value("agentroute-sidecar", config)
    argv = shlex.split(lis.command)
    assert argv[argv.index("--state-file") + 1] == os.path.join(out, "state.json")
    assert argv[argv.index("--config") + 1] == config
    assert lis.stderr_logfile == os.path.join(out, "listener.log")
    assert set(procs) == {"agentroute-sidecar", "agentroute-sidecar-health"}


def test_3_inline_comment_in_a_path_is_refused(area):
    prof = write(os.path.join(area, "p.yaml"), PROFILE)
    for piece in (" ;x", " #x"):
        out = os.path.join(area, "o" + piece)
        err = one_line(render(prof, out))
        assert "comment" in err
        assert not os.path.exists(out)


# -- 4. apply's rollback restores owner and mode ---------------------------------------------------------

def test_4_rollback_restores_owner_and_mode(area, user):
    from sidecar_plugin.shell.files.outfiles import restore, snapshot

    name, uid, gid = user
    paths = [os.path.join(area, n) for n in ("litellm.yaml", "master.key")]
    for p, mode in zip(paths, (0o640, 0o600)):
        write(p, "old\n")
        os.chown(p, 0 if p.endswith("yaml") else uid, gid)
        os.chmod(p, mode)
    before = {p: owner_mode(p) for p in paths}
    snap = snapshot(paths)
    for p in paths:
        os.unlink(p)
        write(p, "new\n")
    restore(snap)
    assert {p: owner_mode(p) for p in paths} == before
    assert all(open(p).read() == "old\n" for p in paths)


# -- 5. one render or apply at a time on an out-dir -------------------------------------------------------

def test_5_parallel_renders_agree_on_the_master_key(area):
    prof = write(os.path.join(area, "p.yaml"), PROFILE)
    binary = fake_binary(area)
    outs = []
    for i in range(4):
        out = os.path.join(area, f"out{i}")
        env = dict(os.environ, **GEN_KEY_ENV)
        procs = [subprocess.Popen(CLI + ["render", "--profile", prof, "--out-dir", out, "--binary", binary],
                                  env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for _ in range(6)]
        for p in procs:
            assert p.wait(timeout=120) == 0, p.stderr.read()
            p.stderr.close()
        outs.append(out)
    for out in outs:
        key = open(os.path.join(out, "master.key")).read().strip()
        cfg = yaml.safe_load(open(os.path.join(out, "litellm.yaml")))
        assert cfg["general_settings"]["master_key"] == key


def run_while_the_out_dir_is_locked(out, argv, env, while_held=lambda: None):
    """Hold ``out``'s lock, start the CLI with ``argv``: it must still wait after 1.5 s (``while_held``
    checks what it left alone meanwhile); release, and return (exit code, stderr). Killed if left running."""
    fd = os.open(os.path.join(out, ".sidecar-plugin.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    proc = None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        proc = subprocess.Popen(CLI + argv, env=dict(os.environ, **env), cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            with pytest.raises(subprocess.TimeoutExpired):
                proc.wait(timeout=1.5)
            while_held()
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
        _, err = proc.communicate(timeout=60)
        return proc.returncode, err
    finally:
        os.close(fd)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()


def test_5_render_waits_while_another_holds_the_out_dir(area):
    prof = write(os.path.join(area, "p.yaml"), PROFILE)
    out = os.path.join(area, "out")
    os.mkdir(out)

    def nothing_written():
        assert not os.path.exists(os.path.join(out, "master.key"))

    code, err = run_while_the_out_dir_is_locked(
        out, ["render", "--profile", prof, "--out-dir", out, "--binary", fake_binary(area)], GEN_KEY_ENV,
        nothing_written)
    assert code == 0, err


def test_5_apply_waits_for_the_out_dir_lock(area):
    prof = write(os.path.join(area, "p.yaml"), PROFILE)
    out = os.path.join(area, "out")
    assert render(prof, out).returncode == 0
    # still waiting for the lock after 1.5 s: it has not asked supervisord yet
    code, err = run_while_the_out_dir_is_locked(
        out, ["apply", "--profile", prof, "--out-dir", out, "--binary", fake_binary(area),
              "-s", "unix://" + os.path.join(area, "no.sock")], KEYS)
    assert code == 1
    assert "cannot reach supervisord" in err


# -- 6. the log after a rotation is never readable by others ---------------------------------------------

def test_6_log_recreated_by_supervisords_rotation_is_private_from_its_first_byte(area):
    from supervisor.loggers import RotatingFileHandler

    prof = write(os.path.join(area, "p.yaml"), PROFILE)
    out = os.path.join(area, "out")
    assert render(prof, out).returncode == 0
    log = os.path.join(out, "litellm.log")
    old = os.umask(0o022)  # supervisord's default umask
    try:
        handler = RotatingFileHandler(log, maxBytes=10, backupCount=2)
        handler.emit(type("R", (), {"msg": "x" * 40, "asdict": lambda self: {"message": "x" * 40}})())
        assert os.path.exists(log + ".1")
        assert owner_mode(log)[2] & 0o077 == 0, oct(owner_mode(log)[2])
        handler.close()
    finally:
        os.umask(old)


def test_6_real_supervisord_rotation_keeps_the_log_private(make_sidecar):
    sc = make_sidecar(render_args=["--no-autostart"])
    conf = os.path.join(sc.out, "sidecar.conf")
    text = open(conf).read().replace("stdout_logfile_maxbytes=10MB", "stdout_logfile_maxbytes=50")
    with open(conf, "w") as fh:
        fh.write(text)
    sc.start_supervisord(wait_state=None)
    rpc = sc.rpc()
    rpc.supervisor.stopProcess("agentroute-sidecar-health:agentroute-sidecar-health", True)  # no listener to fix modes
    rpc.supervisor.startProcess("agentroute-sidecar:agentroute-sidecar", False)
    poll(lambda: os.path.exists(sc.log_file + ".1"), 20, what="a rotation of the log")
    assert owner_mode(sc.log_file)[2] & 0o077 == 0, oct(owner_mode(sc.log_file)[2])


def test_6_user_reads_the_rotated_log_others_do_not(area, user):
    from supervisor.loggers import RotatingFileHandler

    name, uid, gid = user
    prof = write(os.path.join(area, "p.yaml"), PROFILE)
    out = os.path.join(area, "out")
    assert render(prof, out, "--user", name).returncode == 0
    log = os.path.join(out, "litellm.log")
    old = os.umask(0o022)
    try:
        handler = RotatingFileHandler(log, maxBytes=10, backupCount=2)
        handler.emit(type("R", (), {"msg": "x" * 40, "asdict": lambda self: {"message": "x" * 40}})())
        handler.close()
    finally:
        os.umask(old)
    assert os.path.exists(log + ".1")
    assert tried(uid, gid, {"read": f"open({log!r}).read()"}) == {"read": "ok"}
    nobody = pwd.getpwnam("nobody")
    assert tried(nobody.pw_uid, nobody.pw_gid, {"read": f"open({log!r}).read()"}) == {"read": "PermissionError"}


# -- 7. secrets: supervisord's credentials never in output; redaction of encoded forms ---------------------

@pytest.mark.parametrize("command", ["status", "start", "stop"])
def test_7_supervisord_password_never_in_output(area, command):
    from harness import free_port

    url = f"http://ops:Sup3rSecretPw0rd@127.0.0.1:{free_port()}"
    res = run_cli(command, "-s", url, "--program", "agentroute-sidecar", timeout=60)
    assert res.returncode != 0
    assert "Sup3rSecretPw0rd" not in res.stdout + res.stderr, res.stderr


@pytest.mark.parametrize("spelling", ["-s {url}", "-s{url}", "--serv={url}", "--server {url}"])
@pytest.mark.parametrize("url", ["http://ops:Hunter2/SuperSecret@127.0.0.1:1",
                                 "unix://ops:zzpwabcdef@/nonexistent/s.sock",
                                 "http://ops:Pw%2Fwith%23marks@127.0.0.1:99999"])
def test_7_no_spelling_of_the_url_shows_its_password(spelling, url):
    args = [a.format(url=url) for a in spelling.split(" ")]
    res = run_cli("status", *args, "--program", "agentroute-sidecar", timeout=60)
    out = res.stdout + res.stderr
    assert res.returncode in (2, 4), out
    assert "Traceback" not in out, out
    assert len(res.stderr.strip().splitlines()) <= 2, out
    for piece in ("Hunter2", "SuperSecret", "zzpwabcdef", "Pw%2Fwith%23marks", "Pw/with#marks"):
        assert piece not in out, out


def test_7_a_profile_field_holding_a_key_is_not_echoed(area):
    prof = write(os.path.join(area, "p.yaml"), PROFILE + f"api_base: {KEYS['OPENROUTER_API_KEY']}\n")
    res = render(prof, os.path.join(area, "out"))
    assert "api_base" in one_line(res), res.stderr
    assert KEYS["OPENROUTER_API_KEY"] not in res.stderr, res.stderr


def test_7_apply_never_prints_the_password(area):
    from harness import free_port

    prof = write(os.path.join(area, "p.yaml"), PROFILE)
    url = f"http://ops:Sup3rSecretPw0rd@127.0.0.1:{free_port()}"
    res = run_cli("apply", "--profile", prof, "--out-dir", os.path.join(area, "out"), "--binary", fake_binary(area),
                  "-s", url, env=KEYS)
    assert res.returncode != 0
    assert "Sup3rSecretPw0rd" not in res.stdout + res.stderr


def test_7_redaction_covers_split_encoded_escaped_and_basic_auth():
    import base64
    from urllib.parse import quote

    from sidecar_plugin.shell.listener.redact import Redactor

    secret = "sk-or-v1-ab/cd+ef=gh_0123456789abcdefXYZ"
    r = Redactor([secret])
    half = len(secret) // 2
    lines = r.lines([f"key starts {secret[:half]}", f"{secret[half:]} and ends", "clean"])
    assert len(lines) == 3, lines
    assert not any(secret[:half] in x or secret[half:] in x for x in lines), lines
    for text in (quote(secret, safe=""), json.dumps(secret).replace("/", "\\/"), quote(secret)):
        assert secret[12:20] not in r(f"x={text} y"), text
        assert "[REDACTED]" in r(f"x={text} y"), text
    for prefix in ("u:", "us:", "use:", ""):
        b64 = base64.b64encode((prefix + secret).encode()).decode()
        shown = r(f"Authorization: Basic {b64}")
        assert b64[8:30] not in shown, (prefix, shown)
    pw = "Sup3rSecretPw0rd"
    b64 = base64.b64encode(f"ops:{pw}".encode()).decode()
    assert b64 not in Redactor([pw])(f"header Authorization: Basic {b64} sent")


# -- 8. the listener's lock and history never follow a link ----------------------------------------------

def test_8_state_lock_and_history_do_not_follow_links(area):
    from sidecar_plugin.shell.files.statefile import append_history, lock_state_file

    victim = write(os.path.join(area, "root-file"), "precious\n")
    state = os.path.join(area, "state.json")
    os.symlink(victim, state + ".lock")
    with pytest.raises(OSError):
        os.close(lock_state_file(state))
    os.symlink(victim, os.path.join(area, "history.jsonl"))
    with pytest.raises(OSError):
        append_history(state, {"state": "running"})
    assert open(victim).read() == "precious\n"


# -- 9. everything checked before anything is written ----------------------------------------------------

@pytest.mark.parametrize("text,field", [
    ("name: a\nname: b\nmodels: {heavy: a/b}\n", "name"),
    ("name: a\nmodels:\n  heavy: a/b\n  heavy: c/d\n", "models.heavy"),
])
def test_9_duplicate_yaml_keys_are_refused(area, text, field):
    prof = write(os.path.join(area, "p.yaml"), text)
    err = one_line(render(prof, os.path.join(area, "out")))
    assert f"{prof}: {field}: duplicate key" in err


def test_9_duplicate_json_keys_are_refused(area):
    prof = write(os.path.join(area, "p.json"), '{"name": "a", "models": {"heavy": "a/b", "heavy": "c/d"}}')
    err = one_line(render(prof, os.path.join(area, "out")))
    assert f"{prof}: models.heavy: duplicate key" in err


@pytest.mark.parametrize("flag", ["--log-file", "--state-file", "--metrics-file"])
def test_9_missing_folders_are_refused_before_anything_is_written(area, flag):
    prof = write(os.path.join(area, "p.yaml"), PROFILE)
    out = os.path.join(area, "out")
    err = one_line(render(prof, out, flag, os.path.join(area, "missing", "f")))
    assert flag in err
    assert "missing" in err
    assert not os.path.exists(out)


# -- the --user layout under a real supervisord: the listener, as the user, writes its state ---------------

@pytest.fixture
def user_python(area, user):
    """An interpreter a new user can run: this venv's is under /root (0700); the system one, with our packages."""
    import sysconfig

    _, uid, gid = user
    places = [ROOT, sysconfig.get_paths()["purelib"]]
    probe = as_user(uid, gid, f"import os, json; print(json.dumps(all(os.access(p, os.R_OK | os.X_OK) for p in {places!r})))")
    if probe.stdout.strip() != "true":
        pytest.skip(f"a new user cannot read this checkout or its packages ({', '.join(places)}): clone into a "
                    "folder others may enter to run the --user layout under a real supervisord")

    system = "/usr/bin/python3"
    if not os.path.exists(system):
        pytest.skip("no system python a new user could run (the venv's interpreter lives under /root)")
    ver = subprocess.run([system, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True)
    if ver.stdout.strip() != str(tuple(sys.version_info[:2])):
        pytest.skip(f"the system python ({ver.stdout.strip()}) is not this one's version: our packages would not load")
    venv = os.path.join(area, "venv")
    subprocess.run([system, "-m", "venv", "--without-pip", venv], check=True, capture_output=True)
    purelib = subprocess.run([os.path.join(venv, "bin", "python"), "-c",
                              "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    write(os.path.join(purelib, "sidecar_plugin_test.pth"), f"{ROOT}\n{sysconfig.get_paths()['purelib']}\n")
    return os.path.join(venv, "bin", "python")


def test_1_user_layout_runs_under_a_real_supervisord(area, user, user_python):
    import signal

    import psutil

    from harness import PLUGIN_SECTION, SUPERVISORD_CONF, free_port
    from sidecar_plugin.names import FD0_MARKER
    from sidecar_plugin.shell.files.statefile import read_history, read_state
    from sidecar_plugin.shell.supervisord.supervisor import rpc_proxy

    name, uid, gid = user
    prof, out = write(os.path.join(area, "p.yaml"), PROFILE), os.path.join(area, "out")
    binary = write(os.path.join(area, "fake-litellm"),
                   f"#!/bin/sh\n# {FD0_MARKER}\nexec {user_python} -u {os.path.join(ROOT, 'tests', 'support', 'fake_litellm.py')} "
                   "\"$@\"\n")
    os.chmod(binary, 0o755)
    port = free_port()
    res = subprocess.run([user_python, "-m", "sidecar_plugin", "render", "--profile", prof, "--out-dir", out,
                          "--binary", binary, "--port", str(port), "--user", name,
                          "--supervisord", os.path.join(os.path.dirname(sys.executable), "supervisord")],
                         capture_output=True, text=True, env=dict(os.environ, **GEN_KEY_ENV), cwd=ROOT, timeout=60)
    assert res.returncode == 0, res.stderr
    sock, conf = os.path.join(area, "s.sock"), os.path.join(area, "supervisord.conf")
    text = SUPERVISORD_CONF.format(sock=sock, dir=area, inet="", include=os.path.join(out, "sidecar.conf"),
                                   plugin=PLUGIN_SECTION)
    # docs/deploying.md's --user deployment: the listener (the user) may use supervisord's socket
    write(conf, text.replace(f"file={sock}\n", f"file={sock}\nchown=root:{gid}\nchmod=0770\n", 1))
    proc = subprocess.Popen([sys.executable, "-m", "supervisor.supervisord", "-c", conf], cwd=area,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def running():
            try:
                st = read_state(os.path.join(out, "state.json"))
            except Exception:
                return None
            return st if st.state.value == "running" else None
        st = poll(running, 60, interval=0.1, what="running under --user")
        run_dir = os.path.join(out, "run")
        assert psutil.Process(st.pid).uids().real == uid
        assert psutil.Process(st.listener_pid).uids().real == uid
        assert owner_mode(os.path.join(run_dir, "state.json"))[:3] == (uid, gid, 0o644)
        assert owner_mode(os.path.join(run_dir, "history.jsonl"))[::2] == (uid, 0o644)
        assert read_history(os.path.join(run_dir, "state.json"))[-1]["state"] == "running"
        assert owner_mode(os.path.join(out, "sidecar.conf"))[0] == 0
        rpc = rpc_proxy("unix://" + sock, env={})
        info = rpc.sidecar.getState("agentroute-sidecar")
        assert info["state"] == "running"
        # a restart under --user: the listener asks supervisord which pid is new and spares it
        rpc.supervisor.stopProcess("agentroute-sidecar", True)
        rpc.supervisor.startProcess("agentroute-sidecar", True)
        new = poll(lambda: (lambda s: s if s and s.pid not in (None, st.pid) else None)(running()), 60,
                   interval=0.1, what="running again with a new pid")
        assert rpc.supervisor.getProcessInfo("agentroute-sidecar")["pid"] == new.pid
        log = open(os.path.join(out, "listener.log")).read()
        assert "permission denied" not in log.lower(), log[-2000:]
        assert "reaped" not in log, log[-2000:]
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=5)
        left = [p for p in psutil.process_iter(["uids"]) if p.info["uids"] and p.info["uids"].real == uid]
        for p in left:  # only the test user's processes: the user exists for this test alone
            p.kill()
        psutil.wait_procs(left, timeout=5)


def test_11_a_fifo_named_like_a_profile_is_refused_not_waited_on(area):
    fifo = os.path.join(area, "p.yaml")
    os.mkfifo(fifo)
    res = render(fifo, os.path.join(area, "out"))
    assert "not a regular file" in one_line(res)
    folder = os.path.join(area, "profiles")
    os.mkdir(folder)
    write(os.path.join(folder, "a.yaml"), PROFILE)
    os.mkfifo(os.path.join(folder, "b.yaml"))
    res = render(folder, os.path.join(area, "out2"))
    assert "not a regular file" in one_line(res)
    assert not os.path.exists(os.path.join(area, "out2"))


@pytest.mark.parametrize("flag,name", [("--state-file", "sidecar.conf"), ("--log-file", "litellm.yaml"),
                                       ("--metrics-file", "master.key"), ("--log-file", "state.json")])
def test_9_an_output_file_that_is_another_file_of_the_render_is_refused(area, flag, name):
    prof = write(os.path.join(area, "p.yaml"), PROFILE)
    out = os.path.join(area, "out")
    os.mkdir(out)
    res = render(prof, out, flag, os.path.join(out, name))
    assert flag in one_line(res)
    assert os.listdir(out) == []
