"""Render from the command line: a missing LiteLLM binary is one line, exit 3, nothing written.

A process of its own: PATH is the CLI's search path (tests/unit/test_render.py renders in-process).
"""

import os

from harness import run_cli
from test_render import ENV, setup


def test_binary_missing_exits_3_and_writes_nothing(tmp_path):
    prof, out, _ = setup(tmp_path)
    # the interpreter's own bin folder is searched too, so name a binary that exists nowhere
    res = run_cli("render", "--profile", prof, "--out-dir", out, "--binary", "litellm-none-such",
                  env={**ENV, "PATH": "/nonexistent"})
    assert res.returncode == 3
    assert res.stderr.strip() == ("litellm-none-such not found on PATH; install it with "
                                  "\"pipx install 'litellm[proxy]==1.106.2'\" (or pass --binary)")
    assert not os.path.exists(out)


def test_default_binary_message_is_the_contracts(tmp_path):
    prof, out, _ = setup(tmp_path)
    import sys
    env = {**ENV, "PATH": "/nonexistent"}
    bindir = os.path.dirname(sys.executable)
    if os.path.exists(os.path.join(bindir, "litellm")):
        # LiteLLM is installed beside this interpreter: render finds it there, as designed.
        assert run_cli("render", "--profile", prof, "--out-dir", out, env=env).returncode == 0
        return
    res = run_cli("render", "--profile", prof, "--out-dir", out, env=env)
    assert res.returncode == 3
    assert res.stderr.strip() == ("litellm not found on PATH; install it with "
                                  "\"pipx install 'litellm[proxy]==1.106.2'\" (or pass --binary)")
