"""The tiers stay what their folders say: a unit test starts nothing and reaches no server.

tests/unit runs in seconds as ``make unit`` because none of its files imports what starts a process, a
server or supervisord (the harness, the stand-ins, subprocess), opens a socket or asks for a fixture that
does; the helpers they may import (``inprocess``) hold to the same. Read from the source, as
test_architecture reads the package's.
"""

import ast
import pathlib
from typing import Iterator, List

TESTS = pathlib.Path(__file__).resolve().parent.parent
TIERS = ("unit", "integration", "e2e", "ecosystem")
# what starts or reaches a process, a server or supervisord
STARTS = {"subprocess", "multiprocessing", "pty", "socketserver", "http", "urllib", "requests", "xmlrpc",
          "harness", "traffic", "chaos", "ecosystem", "demo", "fake_litellm", "fake_openrouter", "light_app"}
OPENS = {"socket", "create_connection", "create_server", "socketpair"}  # socket.<these>(...): a socket of its own
FIXTURES = {"make_sidecar", "make_fleet", "cpu_hogs"}  # tests/conftest.py's: a real supervisord, CPU hogs
SHARED = {"inprocess"}  # the helpers unit tests may import (tests/support)


def starts(path: pathlib.Path) -> Iterator[str]:
    """What in ``path`` would start or reach a process, a server or supervisord."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        names: List[str] = []
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            allowed = node.module == "subprocess" and {a.name for a in node.names} == {"CompletedProcess"}
            names = [] if allowed else [node.module]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in OPENS:
            if isinstance(node.func.value, ast.Name) and node.func.value.id == "socket":
                yield f"{path.name}:{node.lineno}: socket.{node.func.attr}()"
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from (f"{path.name}:{node.lineno}: fixture {a.arg}" for a in node.args.args if a.arg in FIXTURES)
        for name in names:
            top = name.split(".")[0]
            if top in STARTS or (top.startswith("test_") and not (TESTS / "unit" / f"{top}.py").exists()):
                yield f"{path.name}:{line}: imports {name}"


def test_unit_tests_start_nothing():
    unit = sorted((TESTS / "unit").glob("*.py")) + [TESTS / "support" / f"{name}.py" for name in SHARED]
    assert [hit for path in unit for hit in starts(path)] == []


def test_the_check_sees_each_way_to_start_something(tmp_path):
    sample = tmp_path / "test_sample.py"
    sample.write_text("import subprocess\nfrom harness import poll\nimport socket\nfrom subprocess import run\n"
                      "from subprocess import CompletedProcess\nfrom test_port import running\n"
                      "def test_x(make_sidecar):\n    socket.socket()\n    socket.socket.connect\n")
    assert [hit.split(": ", 1)[1] for hit in starts(sample)] == [
        "imports subprocess", "imports harness", "imports subprocess", "imports test_port",
        "fixture make_sidecar", "socket.socket()"]


def test_every_test_file_is_in_a_tier_and_named_once():
    """pytest imports test files by name (no packages): two tiers' files of one name would collide."""
    assert sorted(p.name for p in TESTS.glob("test_*.py")) == []
    names = [p.name for tier in TIERS for p in (TESTS / tier).glob("test_*.py")]
    assert sorted(n for n in set(names) if names.count(n) > 1) == []
