"""The layers' one direction: shared names <- pure core <- shells <- faces.

Read from the source (no import needed), so a new import that points the
wrong way fails here, not in a review. And what runs inside supervisord (the
rpcinterface) or per request in the gateway (the client) stays light.
"""

import ast
import pathlib
import subprocess
import sys

PKG = pathlib.Path(__file__).resolve().parent.parent / "sidecar_plugin"
SHARED = {"names", "errors", "__init__"}
FACES = {"client", "rpc", "ctl", "cli", "commands", "display", "profile", "__main__"}


def layer(module: str) -> str:
    parts = module.split(".")[1:]  # drop "sidecar_plugin"
    if not parts or parts[0] in SHARED:
        return "shared"
    if parts[0] in ("core", "shell"):
        return parts[0]
    assert parts[0] in FACES, f"{module}: a module outside the layers"
    return "face"


RANK = {"shared": 0, "core": 1, "shell": 2, "face": 3}


def imports(path: pathlib.Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sidecar_plugin"):
            names = [node.module + "." + a.name for a in node.names] if node.module == "sidecar_plugin" else [node.module]
            for name in names:
                yield name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("sidecar_plugin"):
                    yield alias.name


def module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    return ".".join(rel.parts).replace(".__init__", "")


def test_imports_point_one_way():
    wrong = []
    for path in PKG.rglob("*.py"):
        me = module_name(path)
        for target in imports(path):
            if target == "sidecar_plugin.__version__" or target == "sidecar_plugin":
                continue
            if RANK[layer(target)] > RANK[layer(me)]:
                wrong.append(f"{me} ({layer(me)}) imports {target} ({layer(target)})")
    assert wrong == []


def test_the_core_does_no_io_of_processes_sockets_or_supervisord():
    banned = {"psutil", "socket", "subprocess", "requests", "supervisor", "threading", "xmlrpc"}
    found = []
    for path in (PKG / "core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            found += [f"{path.name}: {n}" for n in names if n.split(".")[0] in banned]
    assert found == []


def test_client_and_rpc_load_neither_cli_listener_render_apply_requests_nor_yaml():
    code = ("import sys, sidecar_plugin.client, sidecar_plugin.rpc\n"
            "heavy = ['sidecar_plugin.cli', 'sidecar_plugin.commands', 'sidecar_plugin.shell.listener',\n"
            "         'sidecar_plugin.core.render', 'sidecar_plugin.core.render_options', 'sidecar_plugin.core.sections',\n"
            "         'sidecar_plugin.shell.apply', 'requests', 'yaml', 'argparse']\n"
            "print(' '.join(m for m in heavy if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_get_state_path_builds_no_parser_and_opens_no_socket():
    # what sidecar.getState runs inside supervisord's loop: discovery of the state file
    from sidecar_plugin.core.discovery import sidecars

    command = ("/v/bin/sidecar-plugin listen --program p --host 127.0.0.1 --port 4000 "
               "--state-file /run/s/state.json --log-file /run/s/l.log --config /run/s/litellm.yaml "
               "--health-timeout 20")
    import argparse
    import socket

    def refuse(*a, **k):
        raise AssertionError("no parser, no socket inside supervisord")

    saved = (argparse.ArgumentParser.__init__, socket.socket.connect)
    argparse.ArgumentParser.__init__, socket.socket.connect = refuse, refuse
    try:
        found = sidecars([command, "/usr/bin/other --program x"])
    finally:
        argparse.ArgumentParser.__init__, socket.socket.connect = saved
    assert found == {"p": {"program": "p", "group": "p", "state-file": "/run/s/state.json",
                           "log-file": "/run/s/l.log", "port": "4000", "host": "127.0.0.1",
                           "config": "/run/s/litellm.yaml"}}


MODULE_LINES = 260  # "none much over 250 lines"
FUNCTION_LINES = 40  # "a function over about 40 lines only with a reason": the reasons live here
LONG_FUNCTIONS = {}  # "module.function": "why it is one function"


def test_modules_and_functions_stay_small():
    """A module over the limit has grown a second job; split it along that seam."""
    big, long = [], []
    for path in PKG.rglob("*.py"):
        source = path.read_text()
        if len(source.splitlines()) > MODULE_LINES:
            big.append(f"{module_name(path)}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{module_name(path)}.{node.name}"
                lines = node.end_lineno - node.lineno + 1
                if lines > FUNCTION_LINES and name not in LONG_FUNCTIONS:
                    long.append(f"{name}: {lines} lines")
    assert big == [] and long == []
