"""Property tests: arbitrary input gives a valid result or one clean error, never an exception."""

import io
import json
import os
import tempfile

import yaml
from hypothesis import HealthCheck, event, given, settings, strategies as st

from sidecar_plugin.core.listener.events import event_input, parse_event, parse_headers
from sidecar_plugin.shell.listener.protocol import protocol_loop
from sidecar_plugin.profile import Profile, ProfileError, parse_profile
from sidecar_plugin.core.state.schema import StateUnavailable
from sidecar_plugin.shell.files.statefile import read_state

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 70000), st.floats(allow_nan=False),
                    st.text(max_size=20))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)
profile_like = st.fixed_dictionaries({}, optional={
    "name": st.one_of(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,10}", fullmatch=True), values),
    "port": st.one_of(st.integers(-5, 70000), values),
    "models": st.one_of(st.dictionaries(st.one_of(st.from_regex(r"[a-z0-9][a-z0-9_-]{0,6}", fullmatch=True),
                                                  st.text(max_size=6)),
                                        st.one_of(st.from_regex(r"[a-z]{1,5}/[a-z0-9.-]{1,8}", fullmatch=True),
                                                  values), max_size=4), values),
    "api_base": st.one_of(st.just("https://openrouter.ai/api/v1"), values),
    "created": values,
})


def check_profile(raw: bytes, source: str) -> None:
    try:
        prof = parse_profile(raw, source)
    except ProfileError as exc:
        msg = str(exc)
        assert msg.startswith(source + ": ")
        assert "\n" not in msg
        event("refused with one line")
        return
    assert isinstance(prof, Profile)
    assert prof.models
    event("valid profile")


@SETTINGS
@given(profile_like, st.sampled_from(["p.yaml", "p.json"]))
def test_structured_profiles_load_or_fail_cleanly(doc, name):
    raw = (json.dumps(doc) if name.endswith(".json") else yaml.safe_dump(doc)).encode()
    check_profile(raw, name)


@SETTINGS
@given(st.binary(max_size=300), st.sampled_from(["p.yaml", "p.json", "p.txt"]))
def test_arbitrary_bytes_as_profile_fail_cleanly(raw, name):
    check_profile(raw, name)


@SETTINGS
@given(st.text(max_size=200), st.text(max_size=300))
def test_event_payloads_are_always_acknowledged(header_tail, payload):
    data = payload.encode("utf-8", "surrogatepass") if False else payload.encode("utf-8", "replace")
    header = f"ver:3.0 eventname:PROCESS_STATE_RUNNING {header_tail.replace(chr(10), ' ')} len:{len(data)}\n"
    out = io.StringIO()
    handled = []

    def handle(h, p):
        name, body = parse_event(parse_headers(h), p)
        handled.append(event_input(name, body, "agentroute-sidecar", "agentroute-sidecar"))
    protocol_loop(io.BytesIO(header.encode("utf-8", "replace") + data), out, handle)
    assert out.getvalue().count("RESULT 2\nOK") == 1


@SETTINGS
@given(st.one_of(st.binary(max_size=400), values.map(lambda v: json.dumps(v).encode()),
                 st.fixed_dictionaries({"schema": st.just(1)}, optional={
                     k: values for k in ("program", "state", "since", "updated_at", "heartbeat_at", "pid",
                                         "port", "health", "log_tail", "listener_pid")}
                 ).map(lambda v: json.dumps(v).encode())))
def test_state_reader_raises_only_state_unavailable(raw):
    fd, path = tempfile.mkstemp()
    try:
        os.write(fd, raw)
        os.close(fd)
        try:
            read_state(path)
        except StateUnavailable:
            pass
    finally:
        os.unlink(path)


valid_profiles = st.fixed_dictionaries({
    "name": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,15}", fullmatch=True),
    "models": st.dictionaries(st.from_regex(r"[a-z0-9][a-z0-9_-]{0,8}", fullmatch=True),
                              st.from_regex(r"(openrouter/)?[a-z0-9-]{1,8}/[a-z0-9.:-]{1,12}", fullmatch=True),
                              min_size=1, max_size=5),
}, optional={"port": st.integers(1, 65535), "created": st.text(max_size=20),
             "api_base": st.sampled_from(["https://openrouter.ai/api/v1", "http://127.0.0.1:9/api/v1"])})


@SETTINGS
@given(valid_profiles, st.sampled_from(["p.yaml", "p.json"]))
def test_valid_profiles_always_load_and_render_every_tier(doc, name):
    from sidecar_plugin.profile import alias, openrouter_model
    from sidecar_plugin.core.render.litellm_yaml import render_litellm_yaml
    raw = (json.dumps(doc) if name.endswith(".json") else yaml.safe_dump(doc)).encode()
    prof = parse_profile(raw, name)
    assert dict(prof.models) == doc["models"]
    assert prof.name == doc["name"]
    rendered = yaml.safe_load(render_litellm_yaml(prof, "sk-or-k", "sk-m"))
    entries = {e["model_name"]: e["litellm_params"]["model"] for e in rendered["model_list"]}
    assert entries == {alias(t): openrouter_model(m) for t, m in doc["models"].items()}
    assert all(v.startswith("openrouter/") and not v.startswith("openrouter/openrouter/") for v in entries.values())


# -- file names and paths (issue 16): the include reads back exactly through supervisord's parser, or
#    the input is refused with one line before anything is written --------------------------------------

HOSTILE_PIECES = [" ;", " #", ";", "#", '"', "'", "%", "%(here)s", "%(ENV_HOME)s", "\\", " ", "\t", "\n", "\r",
                  "\x0b", "\x85", "\u2028", "\xa0", "$HOME", "`", "=", ",", ":", "[program:x]", "ü", "\u3000"]
path_piece = st.lists(st.one_of(st.sampled_from(HOSTILE_PIECES),
                                st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="/\x00"),
                                        min_size=1, max_size=3)),
                      min_size=1, max_size=4).map("".join).filter(lambda s: s not in (".", ".."))


def _supervisord_reads(include):
    """Return {process name: ProcessConfig} as supervisord builds them from an include."""
    from supervisor.options import ServerOptions, UnhosedConfigParser

    opts = ServerOptions()
    parser = UnhosedConfigParser()
    parser.expansions = opts.environ_expansions
    parser.read(include)
    return {pc.name: pc for g in opts.process_groups_from_parser(parser) for pc in g.process_configs}


def _render_or_refuse(profiles, out, binary, **extra):
    import shlex

    from sidecar_plugin.core.render.terms import RenderError
    from sidecar_plugin.shell.render import build

    req = build.RenderRequest(profiles=profiles, out_dir=out, binary=binary, **extra)
    try:
        rendered = build.build(req, {"OPENROUTER_API_KEY": "sk-or-k", "AGENTROUTE_MASTER_KEY": "sk-m-0123456789"})
    except (RenderError, ProfileError) as exc:
        assert "\n" not in str(exc)
        assert "\r" not in str(exc)
        assert len(str(exc)) < 2000
        assert not os.path.exists(out)  # refused before anything is written
        event("refused with one line")
        return None
    build.write(rendered)
    event("rendered")
    return rendered, _supervisord_reads(os.path.join(out, "sidecar.conf")), shlex.split


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path_piece, path_piece, path_piece)
def test_hostile_paths_read_back_exactly_or_are_refused(out_piece, profile_piece, log_piece):
    from sidecar_plugin.names import marker_value

    with tempfile.TemporaryDirectory() as tmp:
        base = os.path.join(tmp, "b" + out_piece)
        os.makedirs(base)
        profile = os.path.join(base, "p" + profile_piece + ".yaml")
        with open(profile, "w") as fh:
            fh.write("name: work\nmodels: {heavy: anthropic/claude-opus-4.5}\n")
        binary = os.path.join(base, "lite" + out_piece)
        with open(binary, "w") as fh:
            fh.write("#!/bin/sh\n")
        os.chmod(binary, 0o755)
        log_dir = os.path.join(tmp, "l" + log_piece)
        os.makedirs(log_dir)
        out = os.path.join(base, "o" + out_piece)
        log = os.path.join(log_dir, "x" + log_piece + ".log")
        got = _render_or_refuse([profile], out, binary, port=4567, log_file=log)
        if got is None:
            return
        rendered, procs, split = got
        assert set(procs) == {"agentroute-sidecar", "agentroute-sidecar-health"}
        prog, lis = procs["agentroute-sidecar"], procs["agentroute-sidecar-health"]
        config = os.path.join(out, "litellm.yaml")
        assert split(prog.command) == [binary, "--config", config, "--host", "127.0.0.1", "--port", "4567"]
        assert prog.directory == out
        assert prog.stdout_logfile == log
        assert prog.environment["SIDECAR_PLUGIN_TREE"] == marker_value("agentroute-sidecar", config)
        argv = split(lis.command)
        assert argv[argv.index("--state-file") + 1] == os.path.join(out, "state.json")
        assert argv[argv.index("--log-file") + 1] == log
        assert argv[argv.index("--config") + 1] == config
        assert lis.stderr_logfile == os.path.join(out, "listener.log")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(path_piece, min_size=1, max_size=3, unique=True))
def test_hostile_profile_file_names_in_a_folder_never_add_a_section(names):
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "profiles")
        os.makedirs(folder)
        names = [n for n in names if not n.startswith(".")] or ["plain"]  # dot files are not profiles
        for i, name in enumerate(names):
            with open(os.path.join(folder, name + ".yaml"), "w") as fh:
                fh.write(f"name: p{i}\nmodels: {{heavy: anthropic/claude-opus-4.5}}\n")
        binary = os.path.join(tmp, "litellm")
        with open(binary, "w") as fh:
            fh.write("#!/bin/sh\n")
        os.chmod(binary, 0o755)
        got = _render_or_refuse([folder], os.path.join(tmp, "out"), binary, port=4567)
        if got is None:
            return
        _, procs, _ = got
        assert set(procs) == {f"agentroute-p{i}" for i in range(len(names))} | {"agentroute-health"}
