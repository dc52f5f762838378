"""Each option is declared once (``core.options.table``) and every layer derives from that one entry.

A knob added to the table, and as a field to each layer's class (the check
names each one missing), reaches render's parser, the request, the record,
the rendered listener command line and, parsed back from it, the machine's
Config; and no default is written a second time anywhere else.
"""

import ast
import dataclasses
import pathlib
import re
from typing import Any, Dict

import pytest

import sidecar_plugin
from inprocess import package_classes
from sidecar_plugin.core.options.table import (
    BY_FLAG, DEFAULTS, LISTEN, MACHINE, OPTIONS, PLAN, RENDER, WATCH, Written, default, fields_of, of,
)
from sidecar_plugin.core.options.values import shown

PKG = pathlib.Path(sidecar_plugin.__file__).resolve().parent
DECLARED = PKG / "core" / "options" / "table.py"

KNOB = ('    Option("--test-knob", parse=positive_number, default=7.5, layers=at(RENDER, PLAN, LISTEN, WATCH, MACHINE), '
        'kept="seconds", written=Written.CHANGED, help="a knob added by the test"),\n')

RENDER_WITH_KNOB = """
import configparser, json, os, sys
import sidecar_plugin
from sidecar_plugin.cli import main
from sidecar_plugin.core.listener.model import Config, config_of
from sidecar_plugin.core.options.listen_args import parse_command

profile, out, binary = sys.argv[1:4]
code = main(["render", "--profile", profile, "--out-dir", out, "--binary", binary, "--test-knob", "9.5"])
conf = configparser.RawConfigParser(interpolation=None)
conf.read(os.path.join(out, "sidecar.conf"))
listener = next(conf[s] for s in conf.sections() if s.startswith("eventlistener:"))
target = parse_command(listener["command"]).targets[0]
with open(os.path.join(out, "sidecar.json")) as fh:
    record = json.load(fh)["options"]
print(json.dumps({"package": sidecar_plugin.__file__, "exit": code, "record": record.get("test-knob"),
                  "listener": target.test_knob, "config": config_of(target).test_knob,
                  "config_default": Config().test_knob}))
"""
MISSING = re.compile(r"(\w+) has no field for --test-knob \((\w+)\); add: (.+--test-knob\"\))")


def _add_field(pkg: pathlib.Path, cls: str, line: str) -> None:
    """Write ``line`` as the last option field of ``cls``, wherever in the package it is defined."""
    path = next(p for p in pkg.rglob("*.py") if f"\nclass {cls}:" in p.read_text())
    lines = path.read_text().splitlines(keepends=True)
    at = next(i for i, text in enumerate(lines) if text.startswith(f"class {cls}:"))
    last = at
    for i in range(at + 1, len(lines)):
        if lines[i].strip() and not lines[i].startswith(" "):
            break
        if re.match(r"    \w+: .+ = default\(", lines[i]):
            last = i
    lines.insert(last + 1, f"    {line}\n")
    path.write_text("".join(lines))



def test_the_check_names_a_field_missing_mistyped_or_defaulted_again() -> None:
    @dataclasses.dataclass(frozen=True)
    class Machine:
        health_timeout: float = default("--health-timeout")
        hang_window: float = default("--hang-window")
        failure_threshold: int = default("--failure-threshold")

    assert fields_of(MACHINE)(Machine) is Machine
    for body, words in (
        ("health_timeout: float = default('--health-timeout')\n    failure_threshold: int = 3",
         'Machine has no field for --hang-window (machine); add: hang_window: float = default("--hang-window")'),
        ("health_timeout: float = 60.0\n    hang_window: float = 20.0\n    failure_threshold: int = 3",
         "Machine.health_timeout is not as --health-timeout is declared"),
        ("health_timeout: int = default('--health-timeout')\n    hang_window: float = 20.0\n"
         "    failure_threshold: int = 3", "Machine.health_timeout is not as --health-timeout is declared"),
    ):
        space: Dict[str, Any] = {"dataclass": dataclasses.dataclass, "default": default}
        exec(f"from __future__ import annotations\n@dataclass(frozen=True)\nclass Machine:\n    {body}\n", space)
        with pytest.raises(TypeError) as exc:
            fields_of(MACHINE)(space["Machine"])
        assert str(exc.value).startswith(words), str(exc.value)


def _dataclasses():
    return (c for c in package_classes() if dataclasses.is_dataclass(c))


def test_no_dataclass_writes_an_options_default_of_its_own():
    """A field named after an option that holds its default must come from the declaration."""
    restated = []
    for cls in _dataclasses():
        layer = cls.__dict__.get("__declared__")
        for f in dataclasses.fields(cls):
            o = BY_FLAG.get("--" + f.name.replace("_", "-"))
            if o is None or o.default in (None, "", False) or f.default is dataclasses.MISSING:
                continue
            if f.default == o.default and not (layer and layer in o.layers):
                restated.append(f"{cls.__module__}.{cls.__name__}.{f.name} = {f.default!r}")
    assert restated == []


def _restatements(path: pathlib.Path):
    """Where ``path`` writes an option's default again: ``attr=<default>``, a table entry, a help's "default X"."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        for o in OPTIONS:
            if o.default in (None, "", False, True):
                continue
            if isinstance(node, ast.keyword) and node.arg == o.attr and _is(node.value, o.default):
                yield f"{path.name}:{node.value.lineno}: {o.attr}={o.default!r}"
            elif isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values):
                    if isinstance(key, ast.Constant) and key.value in (o.flag, o.name, o.attr):
                        if any(_is(n, o.default) for n in ast.walk(value)):
                            yield f"{path.name}:{key.lineno}: {key.value!r}: ... {o.default!r}"
            elif isinstance(node, ast.Call) and any(_is(a, o.flag) for a in node.args):
                words = f"default {shown(o.default)}"
                if any(isinstance(n, ast.Constant) and isinstance(n.value, str) and words in n.value
                       for n in ast.walk(node)):
                    yield f"{path.name}:{node.lineno}: {o.flag} help says {words!r}"


def _is(node, value) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) is type(value) and node.value == value


def test_no_default_is_written_twice_in_the_source():
    found = [p for path in PKG.rglob("*.py") if path != DECLARED for p in _restatements(path)]
    assert found == []


def test_the_scan_finds_a_default_written_again(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('X = {"--hang-window": ("hang_window", float, 20.0)}\nf(hang_window=20.0)\n'
                   'p.add_argument("--retry-delay", help="seconds (default 10)")\n')
    assert len(list(_restatements(bad))) == 3


def test_every_layer_takes_the_declared_defaults():
    from sidecar_plugin.core.listener.model import Config
    from sidecar_plugin.core.options.listen_args import ListenerOptions
    from sidecar_plugin.core.options.remember import KINDS
    from sidecar_plugin.core.render.terms import RenderOptions
    from sidecar_plugin.shell.render.build import RenderRequest

    request = RenderRequest(profiles=[], out_dir="/x")
    plan = RenderOptions(out_dir="/x", binary="/b", listener_command=("l",))
    watched = ListenerOptions(program="p", port=1, state_file="/s", log_file="/l")
    for layer, made in ((RENDER, request), (PLAN, plan), (WATCH, watched), (MACHINE, Config())):
        assert {o.attr: getattr(made, o.attr) for o in of(layer)} == {o.attr: DEFAULTS[o.attr] for o in of(layer)}
    assert KINDS == {o.name: o.kept for o in of(RENDER)}
    assert all(KINDS.values())


def test_the_listeners_line_reads_back_every_knob_it_writes():
    from sidecar_plugin.core.options.listen_args import ListenerOptions, listen_argv, parse_listen_argv

    changed = {"host": "::1", "health_timeout": 61.5, "retry_delay": 3.0, "retry_max_delay": 30.0,
               "retry_reset_after": 90.0, "hang_window": 4.5, "port_owner": "supervisord", "memory_budget": 300,
               "memory_every": 2.5, "port_note": "--binary /x is a wrapper: it binds the port itself"}
    assert set(changed) == {o.attr for o in of(WATCH) if o.written is not Written.NEVER or o.attr == "host"}
    s = ListenerOptions(program="p", port=4001, state_file="/s/state.json", log_file="/s/l.log", **changed)
    argv = listen_argv(["sidecar-plugin"], [s], None)
    back = parse_listen_argv(argv[2:]).targets[0]
    assert {k: getattr(back, k) for k in changed} == changed
    plain = listen_argv(["sidecar-plugin"], [ListenerOptions(program="p", port=4001, state_file="/s/state.json",
                                                              log_file="/s/l.log")], None)
    assert not {"--hang-window", "--port-owner", "--memory-budget", "--memory-every", "--port-note"} & set(plain)


def test_help_says_each_declared_default():
    from sidecar_plugin.cli import build_parser

    listen = " ".join(build_parser()._subparsers._group_actions[0].choices["listen"].format_help().split())
    hang = BY_FLAG["--hang-window"]
    assert hang.help_text().endswith(f"(default {shown(hang.default)})")
    assert hang.help_text() in listen
    assert all(o.flag in listen for o in of(LISTEN))
