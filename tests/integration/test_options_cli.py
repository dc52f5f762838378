"""The options as processes see them: a new knob through a real render to the listener's Config, old
records read, each parser's own defaults.

tests/unit/test_options.py checks the declaration table in-process.
"""

import json
import os
import shutil
import subprocess
import sys


from harness import KEYS, PROFILE, fake_binary, write
from sidecar_plugin.core.options.table import MACHINE, PLAN, RENDER, WATCH
from test_options import KNOB, MISSING, PKG, RENDER_WITH_KNOB, _add_field


def test_a_new_option_is_its_entry_and_the_fields_the_check_asks_for_and_reaches_the_listeners_config(tmp_path):
    """A knob added to the table: each layer's check names the field it lacks; with them, a real render carries
    the knob from render's flag to the record, the listener's line, and the machine's Config."""
    pkg = tmp_path / "copy" / "sidecar_plugin"
    shutil.copytree(PKG, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    declared = pkg / "core" / "options" / "table.py"
    text = declared.read_text()
    declared.write_text(text.replace("\n)\nBY_FLAG", "\n" + KNOB + ")\nBY_FLAG", 1))
    assert declared.read_text() != text
    profile = write(str(tmp_path / "p.yaml"), PROFILE)
    env = dict(os.environ, **KEYS, PYTHONPATH=str(pkg.parent))
    asked = []
    for _ in range(6):
        res = subprocess.run([sys.executable, "-c", RENDER_WITH_KNOB, profile, str(tmp_path / "out"),
                              fake_binary(str(tmp_path))], capture_output=True, text=True, env=env, timeout=60,
                             cwd=str(tmp_path))  # not the checkout: -c puts the working folder first on the path
        if res.returncode == 0:
            break
        found = MISSING.search(res.stderr)
        assert found, res.stderr
        cls, layer, line = found.groups()
        assert line == 'test_knob: float = default("--test-knob")'
        asked.append((cls, layer))
        _add_field(pkg, cls, line)
    assert sorted(asked) == [("Config", MACHINE), ("ListenerOptions", WATCH), ("RenderOptions", PLAN),
                             ("RenderRequest", RENDER)]
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.splitlines()[-1])
    assert got.pop("package").startswith(str(pkg))
    assert got == {"exit": 0, "record": 9.5, "listener": 9.5, "config": 9.5, "config_default": 7.5}


def test_the_listener_reads_what_earlier_releases_wrote_and_refuses_a_budget_of_zero(tmp_path):
    """Its parsers are the listener's, not render's: a budget of 512.0 (as an earlier listener took it) parses,
    0 is refused with one line, before anything starts."""
    from harness import run_cli
    from sidecar_plugin.core.options.listen_args import parse_values

    assert parse_values(["--memory-budget", "512.0"])["memory_budget"] == 512.0
    base = ["listen", "--program", "p", "--port", "4000", "--state-file", str(tmp_path / "s.json"),
            "--log-file", str(tmp_path / "l.log")]
    for bad in ("0", "-5"):
        res = run_cli(*base, "--memory-budget", bad)
        assert res.returncode == 2, res.stderr
        assert "--memory-budget: must be a finite number" in res.stderr, res.stderr
        assert "Traceback" not in res.stderr
        assert not os.path.exists(tmp_path / "s.json")


def test_each_parser_says_its_own_defaults():
    """listen has no default for --port, --program, --state-file, --log-file (render's come from the out-dir)."""
    from harness import run_cli

    listen = " ".join(run_cli("listen", "--help").stdout.split())
    for render_only in ("OUT_DIR/state.json", "OUT_DIR/litellm.log", "the profile's, else", "(default agentroute-sidecar)"):
        assert render_only not in listen, render_only
    assert "the program it watches (or --root and --sidecar)" in listen
    render = " ".join(run_cli("render", "--help").stdout.split())
    assert "supervisord program name (default agentroute-sidecar)" in render
    assert "--root and --sidecar" not in render
