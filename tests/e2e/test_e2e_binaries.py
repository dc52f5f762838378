"""Every LiteLLM an operator has comes up (issue 30): its entry point by a symlink, a version manager's shim, a
shell wrapper that execs its CLI; each reaches ``running`` under the include alone and answers through the port.

Render reads what ``--binary`` is: LiteLLM's own Python entry point (a symlink followed; a pyenv or asdf shim
asked which one it runs) is served by the launcher on supervisord's socket, the port held; a wrapper it cannot
see through runs LiteLLM's CLI, which binds the port itself, and render says so in one line naming the fix.
"""

import os

import pytest

from harness import run_cli
from test_e2e_litellm import GATEWAY_RENDER, TIERS, litellm_binary, messages, upstream  # noqa: F401
from test_safe_anywhere import doc, include_alone

pytestmark = pytest.mark.e2e


def symlink(folder, real):
    path = os.path.join(folder, "bin", "litellm")
    os.makedirs(os.path.dirname(path))
    os.symlink(real, path)
    return path


def wrapper(folder, real):
    """A site's wrapper: loads an environment file, then execs LiteLLM's CLI."""
    env_file = os.path.join(folder, "litellm.env")
    with open(env_file, "w") as fh:
        fh.write("SITE_WRAPPED=1\n")
    path = os.path.join(folder, "litellm-wrapper")
    with open(path, "w") as fh:
        fh.write(f"#!/bin/sh\nset -a\n. {env_file}\nset +a\nexec {real} \"$@\"\n")
    os.chmod(path, 0o755)
    return path


def pyenv_shim(folder, real):
    """A pyenv-style shim (as ``pyenv rehash`` writes them) and the manager it asks, answering for ``real``."""
    root = os.path.join(folder, "pyenv")
    os.makedirs(os.path.join(root, "libexec"))
    os.makedirs(os.path.join(root, "shims"))
    manager = os.path.join(root, "libexec", "pyenv")
    with open(manager, "w") as fh:
        fh.write("#!/bin/sh\ncase \"$1\" in\n"
                 f"  which) [ \"$2\" = litellm ] && echo {real} ;;\n"
                 f"  exec) shift; shift; exec {real} \"$@\" ;;\nesac\n")
    shim = os.path.join(root, "shims", "litellm")
    with open(shim, "w") as fh:
        fh.write("#!/usr/bin/env bash\nset -e\n[ -n \"$PYENV_DEBUG\" ] && set -x\n\nprogram=\"${0##*/}\"\n\n"
                 f"export PYENV_ROOT=\"{root}\"\nexec \"{manager}\" exec \"$program\" \"$@\"\n")
    for path in (manager, shim):
        os.chmod(path, 0o755)
    return shim


FORMS = {"symlink": (symlink, True), "pyenv shim": (pyenv_shim, True), "shell wrapper": (wrapper, False)}


@pytest.mark.parametrize("form", sorted(FORMS))
def test_every_form_of_binary_comes_up_and_answers(make_sidecar, upstream, tmp_path, form):  # noqa: F811
    make, held = FORMS[form]
    binary = make(str(tmp_path), litellm_binary())
    profile = "name: forms\nmodels:\n" + "".join(f"  {t}: {m}\n" for t, m in TIERS.items()) + \
        f"api_base: {upstream.base_url}\n"
    sc = make_sidecar(workers=2, binary=binary, profile_text=profile, render_args=GATEWAY_RENDER["render_args"],
                      render_env=GATEWAY_RENDER["render_env"])
    res = run_cli("render", *sc.render_args, env=sc.render_env)
    assert res.returncode == 0, res.stderr
    warnings = [line for line in res.stderr.splitlines() if "not held by supervisord" in line]
    with open(os.path.join(sc.out, "sidecar.conf")) as fh:
        conf = fh.read()
    if held:
        assert warnings == []
        assert f"[fcgi-program:{sc.program}]" in conf
    else:
        assert len(warnings) == 1, res.stderr
        assert "--binary naming the litellm it runs" in warnings[0]
        assert f"[program:{sc.program}]" in conf
    include_alone(sc)
    sc.start_supervisord(wait_state=None)
    st = sc.wait_state("running", 360)
    resp = messages(sc.port, "fast")
    assert resp.status_code == 200, resp.text
    assert doc(sc)["port_held"] is held
    assert st.pid is not None
