"""The layers' one direction: shared names <- pure core <- shells <- faces.

Read from the source (no import needed), so a new import that points the
wrong way fails here, not in a review. And what runs inside supervisord (the
rpcinterface) or per request in the gateway (the client) stays light.
"""

import ast
import pathlib
import re
from typing import Dict

PKG = pathlib.Path(__file__).resolve().parent.parent.parent / "sidecar_plugin"
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


def is_module(name: str) -> bool:
    rel = pathlib.Path(*name.split("."))
    return (PKG.parent / rel).with_suffix(".py").is_file() or (PKG.parent / rel / "__init__.py").is_file()


def edges(path: pathlib.Path):
    """Every module ``path`` imports, at the top or inside a function (ast.walk sees both).

    ``from pkg import name`` is an import of the module ``pkg.name`` when there is one.
    """
    me = module_name(path)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("sidecar_plugin"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the importing module's package
                package = me.split(".") if path.name == "__init__.py" else me.split(".")[:-1]
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            if not base.startswith("sidecar_plugin"):
                continue
            for a in node.names:
                yield f"{base}.{a.name}" if is_module(f"{base}.{a.name}") else base


def cycles(graph):
    """The strongly connected components of more than one module (Tarjan), and modules importing themselves."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1 or v in graph.get(v, ()):
                found.append(sorted(part))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def import_graph():
    return {module_name(p): set(edges(p)) for p in PKG.rglob("*.py")}


def test_no_import_circle_of_any_length_local_imports_included():
    assert cycles(import_graph()) == []


def test_the_circle_check_sees_local_imports_and_long_circles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}, "e": {"a"}}
    assert cycles(graph) == [["a", "b", "c"], ["d"]]
    local = ("def f():\n    from sidecar_plugin.commands import COMMANDS\n"
             "    if True:\n        import sidecar_plugin.cli\n")
    tmp = PKG / "core" / "_probe_local.py"
    tmp.write_text(local)
    try:
        assert set(edges(tmp)) == {"sidecar_plugin.commands", "sidecar_plugin.cli"}
    finally:
        tmp.unlink()


# the subject folders of each layer; every module of core/ and shell/ lives in one (test_folders_say_what_lives_in_them)
FOLDERS = {
    "core": {"listener", "render", "options", "profiles", "state"},
    "shell": {"listener", "processes", "supervisord", "files", "render", "litellm_launch"},
}
# run by path under LiteLLM's own interpreter by installed renders (core.options.readback.LAUNCHER_DIR): never moves
UNMOVED = {"shell/litellm_launch"}


def test_folders_say_what_lives_in_them():
    """Each layer is folders by subject; each folder's docstring names every module in it."""
    loose, unnamed, unknown = [], [], []
    for layer, folders in FOLDERS.items():
        for path in sorted((PKG / layer).glob("*.py")):
            if path.name != "__init__.py":
                loose.append(f"{layer}/{path.name}")
        for folder in sorted(p for p in (PKG / layer).iterdir() if p.is_dir() and p.name != "__pycache__"):
            if folder.name not in folders:
                unknown.append(f"{layer}/{folder.name}")
                continue
            doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text())) or ""
            for path in sorted(folder.glob("*.py")):
                if path.stem not in ("__init__", "__main__") and not re.search(f"``{path.stem}[`.]", doc):
                    unnamed.append(f"{layer}/{folder.name}/{path.name}")
    assert loose == []
    assert unknown == []
    assert unnamed == []
    assert all((PKG / p / "__main__.py").is_file() for p in UNMOVED)


# Names that say when a module runs rather than what it holds (issue 32), beside the regular participles
# (a word ending in -ed) that says_when() finds; the old names of renamed modules stay here, so none returns.
WHEN_NAMES = {"held", "kept", "built", "written", "given", "done", "made", "sent", "found", "left", "previous",
              "moves", "signs", "settle", "probing", "reaping"}


def says_when(name: str) -> bool:
    return any(word in WHEN_NAMES or re.search(r"[^e]ed$", word) for word in name.split("_"))


def test_no_two_modules_share_a_name_and_none_says_when() -> None:
    """One module per name, a folder's included (``core/listener/`` and ``shell/listener/`` are one subject
    in two layers, so folders may repeat): a name met in a traceback or an import says where to look."""
    folders = {p.name for p in PKG.rglob("*") if p.is_dir() and (p / "__init__.py").is_file()}
    seen: Dict[str, list] = {}
    for path in sorted(PKG.rglob("*.py")):
        if path.stem not in ("__init__", "__main__"):
            seen.setdefault(path.stem, []).append(module_name(path))
    assert {name: where for name, where in seen.items() if len(where) > 1} == {}
    assert sorted(name for name in seen if name in folders) == []
    assert sorted(name for name in seen if says_when(name)) == []
    assert [says_when(n) for n in ("declared", "owned", "held", "tree_sample", "speed", "record")] == \
        [True, True, True, False, False, False]

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


def test_get_state_path_builds_no_parser_and_opens_no_socket():
    # what sidecar.getState runs inside supervisord's loop: discovery of the state file
    from sidecar_plugin.core.state.discovery import sidecars

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
# Modules allowed over it, with the reason: a table that grows by an entry per option is one thing to read.
LONG_MODULES = {"sidecar_plugin.core.options.table": "the table of every option, an entry each"}
FUNCTION_LINES = 40  # "a function over about 40 lines only with a reason": the reasons live here
LONG_FUNCTIONS: Dict[str, str] = {}  # "module.function": "why it is one function"


def test_modules_and_functions_stay_small():
    """A module over the limit has grown a second job; split it along that seam."""
    big, long = [], []
    for path in PKG.rglob("*.py"):
        source = path.read_text()
        if len(source.splitlines()) > MODULE_LINES and module_name(path) not in LONG_MODULES:
            big.append(f"{module_name(path)}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{module_name(path)}.{node.name}"
                lines = node.end_lineno - node.lineno + 1
                if lines > FUNCTION_LINES and name not in LONG_FUNCTIONS:
                    long.append(f"{name}: {lines} lines")
    assert big == []
    assert long == []


TESTS = pathlib.Path(__file__).resolve().parent.parent


def joined_asserts(source: str, where: str) -> list:
    """``assert a and b``: a failure names neither part (and outside pytest's rewritten modules, nothing)."""
    return [f"{where}:{node.lineno}" for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Assert) and isinstance(node.test, ast.BoolOp) and isinstance(node.test.op, ast.And)]


def test_no_assert_in_the_tests_joins_checks_with_and():
    """One check per assert, so a failure says which part failed."""
    found = [hit for path in TESTS.rglob("*.py") for hit in joined_asserts(path.read_text(), str(path))]
    assert found == []
    assert joined_asserts("assert x and (y or z), 'm'\nassert x or y\nassert not (x and y)\n", "t") == ["t:1"]
