"""The README and docs/ never drift from the code: every command they show is run or checked here.

Every fenced shell block of README.md and docs/*.md is read, command by command
(``$ `` lines where a block shows output, else every line that is not a comment;
a trailing ``\\`` joins lines). Each command is covered one way:

- **run**: in a temp copy of the clone's layout (``conf/``, ``run/``, ``.venv/bin/``,
  the Makefile and ``tests/``) under a real supervisord started from the clone's own
  ``conf/supervisord.conf``, with the stand-in LiteLLM (tests/support/fake_litellm.py) on a
  free port: the command is run by bash as written, after the few substitutions
  ``SUBSTITUTIONS`` lists (the port, a placeholder, the system-wide names that the
  page itself says to replace with the demo's); it must exit 0, and where the page
  shows its output, print it (``…`` stands for anything);
- **checked**: a command that needs root, the network, port 4000 or many minutes
  (``CHECKED``) is named there with the reason, and with the test that runs it and a
  string of that test which shows it does; the string must be in that file;
- **run elsewhere**: a section whose block another test runs whole, as one script
  (``ELSEWHERE``: docs/deploying.md's Debian section, as root with Debian's supervisord).

On top of that, every ``sidecar-plugin`` command (run or checked) is parsed by the
real CLI parser (an unknown command or option fails), and every ``make`` command
names a real target of the Makefile. A command no rule covers fails the test: a
new command in a page needs a line here.

The pages themselves: each starts with one line saying what it holds, every
relative link (and its ``#anchor``) resolves, every path of the clone they name in
backticks exists, every Python block compiles and imports only names that exist,
and the layout section of docs/how-it-works.md names every module of the package.
"""

from __future__ import annotations

import argparse
import ast
import glob
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import threading
from typing import Dict, Iterator, List, NamedTuple, Optional, Tuple

import pytest

from harness import ROOT, Sidecar, fake_binary, free_port, poll

pytestmark = pytest.mark.integration

PAGES = ["README.md"] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
SHELL = {"sh", "shell", "bash", "console"}
PLACEHOLDER_KEY = "sk-or-placeholder-not-a-real-key"  # what make demo renders with when no key is set

# Commands that are checked, not run: (pattern of the command, why not here, the test that runs it,
# a string of that test showing it does). Matched with re.search on the command as the page writes it.
CHECKED: List[Tuple[str, str, str, str]] = [
    (r"^make demo\b", "takes port 4000 and starts the real LiteLLM for minutes: run by hand; its pieces are tested",
     "tests/integration/test_demo.py", "upstream_start"),
    (r"^make test\s*(#|$)", "the whole suite (about nineteen minutes): CI runs exactly it",
     ".ci/run", "make test"),
    (r"^make unit\b", "the unit tier: running it here would run part of this suite inside it",
     "Makefile", "tests/unit"),
    (r"^JOBS=\d+ make test\b", "the whole suite: CI runs it (make test, JOBS its default)",
     "Makefile", "JOBS ?="),
    (r"^make test-fast\b", "the suite without the real LiteLLM: running it here would run this test again",
     "Makefile", "-m \"not e2e\""),
    (r"^make lint\b", "ruff and mypy over the clone's sources, not the docs' layout; make test runs ruff first, "
     "mypy beside the tests", "Makefile", "$(BIN)/mypy >$$types"),
    (r"^SEED=\d+ make chaos\b", "200 random faults take many minutes; a short seeded run is part of the suite",
     "tests/integration/test_chaos.py", "CHAOS_SEED"),
    (r"^make tools\b", "installs packages with apt-get as root; make test runs it first",
     "Makefile", "install oldest tools"),
    (r"^\.venv/bin/python -m pytest ", "runs (part of) this suite: the files and markers it names are checked",
     "setup.cfg", "markers ="),
    (r"^sudo python3 -m venv /opt/agentroute$", "writes /opt as root; a clean virtualenv gets the wheel in",
     "tests/ecosystem/test_ecosystem_wheel.py", "\"venv\""),
    (r"^sudo /opt/agentroute/bin/pip install ", "root and the network (PyPI, git); the wheel is installed instead",
     "tests/ecosystem/test_ecosystem_wheel.py", "\"pip\", \"install\""),
    (r"^sudo useradd --system --user-group ", "creates a system user (root); the --user tests create one the same way",
     "tests/integration/test_hostile.py", "\"useradd\", \"--system\", \"--user-group\""),
    (r"^sudo install -d -m 0755 /etc/agentroute/sidecar$", "writes /etc as root; render --user runs as root there",
     "tests/integration/test_hostile.py", "\"--user\", name"),
    (r"^sudo OPENROUTER_API_KEY=\S+ /opt/agentroute/bin/sidecar-plugin render .*--user agentroute$",
     "renders as root into /etc for a system user", "tests/integration/test_hostile.py", "\"--user\", name"),
    (r"^sudo OPENROUTER_API_KEY=\S+ sidecar-plugin apply --profile /etc/",
     "applies to the system-wide supervisord; apply is run against the test's own",
     "tests/integration/test_operations.py", "sc.apply("),
    (r"^ansible-playbook -i gateways\.ini conf/ansible/sidecar\.yml ", "needs an inventory of servers and a vault",
     "tests/ecosystem/test_ecosystem_ansible.py", "ansible-playbook"),
]

# Sections whose blocks another test runs whole, as one script (page, heading, the test, a string of that test
# showing it does): their commands need no rule of their own.
ELSEWHERE: List[Tuple[str, str, str, str]] = [
    ("docs/deploying.md", "Debian's `supervisor` package", "tests/ecosystem/test_ecosystem_debian_docs.py",
     "systemctl restart supervisor"),
]

# Text of a page -> what the run in the temp clone types instead. Each is said on the page itself
# ("against the demo, use .venv/bin/supervisorctl -c conf/supervisord.conf ...") or is a placeholder.
SUBSTITUTIONS: List[Tuple[str, str]] = [
    ("127.0.0.1:4000", "127.0.0.1:{port}"),  # the demo's port; the test's is free
    ("sidecar-plugin apply ...", "sidecar-plugin apply --profile conf/profile.example.yaml --out-dir run "
                                 "-s unix://$PWD/run/supervisor.sock"),
    ("-s http://host:9001 -u ops -p ...", "-s http://127.0.0.1:{inet} -u ops -p {password}"),
]
BARE = {"supervisorctl": ".venv/bin/supervisorctl -c conf/supervisord.conf", "sidecar-plugin": ".venv/bin/sidecar-plugin"}
LAST = ("make stop",)  # it ends the demo's supervisord: run after every other command


class Command(NamedTuple):
    page: str
    line: int
    text: str  # as the page writes it, continuation lines joined, trailing comment removed
    output: Optional[List[str]]  # what the page shows it prints, when it does
    block: int  # the fenced block it is in (assignments carry over within one block)


# -- reading the pages --

def read(page: str) -> str:
    with open(os.path.join(ROOT, page), encoding="utf-8") as fh:
        return fh.read()


def fenced(page: str) -> Iterator[Tuple[int, str, List[str]]]:
    """Yield (line number of the first line, language, lines) of every fenced block of a page."""
    body: List[str] = []
    lang, start = None, 0
    for number, line in enumerate(read(page).split("\n"), 1):
        if line.startswith("```"):
            if lang is None:
                lang, start, body = line[3:].strip(), number + 1, []
            else:
                yield start, lang, body
                lang = None
        elif lang is not None:
            body.append(line)


def strip_comment(line: str) -> str:
    """Drop a shell comment (`` #`` outside quotes) from the end of a line."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def commands() -> List[Command]:
    found: List[Command] = []
    for page in PAGES:
        for index, (start, lang, body) in enumerate(fenced(page)):
            if lang not in SHELL:
                continue
            prompted = any(line.startswith("$ ") for line in body)
            pending, first = "", 0
            for offset, line in enumerate(body):
                if prompted and not line.startswith("$ ") and not pending:
                    last = found[-1] if found else None
                    if last is not None and last.page == page and last.block == index and last.output is not None:
                        last.output.append(line)
                    continue
                text = strip_comment(line[2:] if prompted and not pending else line)
                if not text.strip() and not pending:
                    continue
                first = first or start + offset
                if text.endswith("\\"):
                    pending += text[:-1].strip() + " "
                    continue
                found.append(Command(page, first, (pending + text.strip()).strip(), [] if prompted else None, index))
                pending, first = "", 0
    return found


COMMANDS = commands()


def section_of(page: str, line: int) -> str:
    """The title of the ``## `` section a line of a page is in (fenced blocks' lines are no headings)."""
    title, fence = "", False
    for number, text in enumerate(read(page).split("\n"), 1):
        if number >= line:
            break
        fence = fence != text.startswith("```")
        if not fence and text.startswith("## "):
            title = text[3:].strip()
    return title


def section_blocks(page: str, title: str) -> List[Tuple[int, str, List[str]]]:
    """The fenced blocks (first line, language, lines) of one ``## `` section of a page."""
    return [b for b in fenced(page) if section_of(page, b[0]) == title]


def run_elsewhere(cmd: Command) -> Optional[Tuple[str, str, str, str]]:
    return next((r for r in ELSEWHERE if r[0] == cmd.page and section_of(cmd.page, cmd.line) == r[1]), None)


def section_variables(cmd: Command) -> Dict[str, str]:
    """The ``NAME=value`` lines of the command's section that come before it (the places a block defines)."""
    found: Dict[str, str] = {}
    for other in COMMANDS:
        m = re.match(r"^(?:export )?([A-Z_]+)=(\S+)$", other.text)
        if m and other.page == cmd.page and other.line < cmd.line and \
                section_of(other.page, other.line) == section_of(cmd.page, cmd.line):
            found[m.group(1)] = m.group(2)
    return found


def checked_rule(cmd: Command) -> Optional[Tuple[str, str, str, str]]:
    rules = [r for r in CHECKED if re.search(r[0], cmd.text)]
    assert len(rules) <= 1, f"{cmd.page}:{cmd.line}: more than one rule matches {cmd.text!r}"
    return rules[0] if rules else None


def words(text: str) -> List[str]:
    lex = shlex.shlex(text, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    return list(lex)


def invocations(text: str, program: str) -> List[List[str]]:
    """The argument lists given to ``program`` anywhere in a command (a pipeline or $(...) included)."""
    found, toks = [], words(text)
    for i, tok in enumerate(toks):
        if os.path.basename(tok) == program:
            args = []
            for t in toks[i + 1:]:
                if t and set(t) <= set("|&;()<>"):
                    break
                args.append(t)
            found.append(args)
    return found


def ident(cmd: Command) -> str:
    return f"{cmd.page}:{cmd.line}"


# -- every command is covered --

def runs_in_clone(cmd: Command) -> bool:
    """Not checked, and one of what the temp clone runs: the venv's tools (after VAR=value), their bare names,
    curl, make, a variable set from one of them, or cp and sed -i on the clone's run/ folder (a copy of the
    demo's profile, edited). Anything else (a new tool, rm, ...) is never run."""
    ws = words(cmd.text)
    while len(ws) > 1 and re.match(r"^[A-Z_]+=[^$`]*$", ws[0]):  # a variable given to the command
        ws = ws[1:]
    head = ws[0]
    on_run = (head == "cp" and all(w.startswith("run/") for w in ws[1:])) or \
        (head == "sed" and ws[1:2] == ["-i"] and len(ws) == 4 and ws[-1].startswith("run/"))
    return checked_rule(cmd) is None and not run_elsewhere(cmd) and (head.startswith(".venv/bin/") or head in BARE or head in ("curl", "make")
                                          or on_run or bool(re.match(r"^[a-z_]+=\$$", head)))


def test_the_pages_have_commands_and_every_one_is_covered():
    assert len(COMMANDS) > 30, [c.text for c in COMMANDS]
    for cmd in COMMANDS:
        assert checked_rule(cmd) or runs_in_clone(cmd) or run_elsewhere(cmd), f"{ident(cmd)}: no test covers {cmd.text!r}"
    used = {rule[0] for rule in map(checked_rule, COMMANDS) if rule}
    assert used == {r[0] for r in CHECKED}, f"rules no page uses any more: {sorted({r[0] for r in CHECKED} - used)}"
    whole = {r[:2] for r in map(run_elsewhere, COMMANDS) if r}
    assert whole == {r[:2] for r in ELSEWHERE}, f"sections with no command any more: {set(r[:2] for r in ELSEWHERE) - whole}"


@pytest.mark.parametrize("rule", ELSEWHERE, ids=[r[1] for r in ELSEWHERE])
def test_a_section_run_elsewhere_names_the_test_that_runs_it(rule):
    page, title, where, evidence = rule
    assert os.path.exists(os.path.join(ROOT, where)), ((where, evidence))
    assert evidence in read(where), ((where, evidence))
    assert any(evidence in "\n".join(body) for _, lang, body in section_blocks(page, title) if lang in SHELL), \
        f"{page}: the section {title!r} no longer has {evidence!r} for {where} to replace"


@pytest.mark.parametrize("rule", CHECKED, ids=[r[0] for r in CHECKED])
def test_a_command_only_checked_names_the_test_that_runs_it(rule):
    pattern, why, where, evidence = rule
    assert why, where
    assert os.path.exists(os.path.join(ROOT, where)), where
    assert evidence in read(where), f"{where} does not show {evidence!r}: does it still run {pattern!r}?"


def test_every_sidecar_plugin_command_parses():
    from sidecar_plugin.cli import CliError, build_parser

    seen = 0
    for cmd in COMMANDS:
        text = cmd.text
        for name, value in section_variables(cmd).items():  # $PORT and the like, as the section sets them
            text = re.sub(r"\$\{?%s\b\}?" % name, value, text)
        for args in invocations(text, "sidecar-plugin"):
            seen += 1
            parser = build_parser()
            if "..." not in args:  # the whole line: required options, types and bounds (else the flags given)
                try:
                    parser.parse_args(args)
                except CliError as exc:
                    pytest.fail(f"{ident(cmd)}: {cmd.text!r}: {exc}")
                continue
            sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
            assert args[0] in sub, f"{ident(cmd)}: no command {args[0]!r}"
            known = sub[args[0]]._option_string_actions
            unknown = [a for a in args[1:] if a.startswith("-") and a.split("=")[0] not in known]
            assert not unknown, f"{ident(cmd)}: {args[0]} has no {unknown}"
    assert seen >= 10


def test_every_make_command_names_a_target():
    targets = set(re.findall(r"^([A-Za-z][\w-]*):", read("Makefile"), re.M))
    seen = 0
    for cmd in COMMANDS:
        for args in invocations(cmd.text, "make"):
            seen += 1
            named = [a for a in args if not a.startswith("-") and "=" not in a]
            assert named, f"{ident(cmd)}: make {named}: no such target in {targets}"
            assert set(named) <= targets, f"{ident(cmd)}: make {named}: no such target in {targets}"
    assert seen >= 5


def test_pytest_commands_name_real_files_and_markers():
    markers = set(re.findall(r"^\s+(\w+): ", read("setup.cfg").split("markers =")[1], re.M))
    for cmd in COMMANDS:
        if " -m pytest " not in cmd.text:
            continue
        args = words(cmd.text)
        for i, a in enumerate(args):
            if a == "-m" and os.path.basename(args[i - 1]) != "python":
                assert args[i + 1] in markers, f"{ident(cmd)}: no marker {args[i + 1]}"
            if a.startswith("tests/"):
                assert os.path.exists(os.path.join(ROOT, a)), f"{ident(cmd)}: no {a}"


# -- the commands that run: a temp clone under a real supervisord --

class Clone(Sidecar):
    """The clone's layout in a temp folder (conf/, run/, .venv/bin/, Makefile, tests/), rendered as
    ``make demo`` renders (the example profile into run/, a generated master key), with the
    stand-in LiteLLM on a free port, under a supervisord run from the clone's own configuration."""

    def __init__(self, folder: str) -> None:
        self._places(folder, os.path.join(folder, "run"))
        self.sock = os.path.join(self.out, "supervisor.sock")
        self.conf = os.path.join(folder, "conf", "supervisord.conf")
        self.inet_port, self.password = free_port(), secrets.token_hex(8)
        os.makedirs(os.path.join(folder, "conf"))
        os.makedirs(os.path.join(folder, ".venv", "bin"))
        os.makedirs(self.out)
        shutil.copy(os.path.join(ROOT, "conf", "profile.example.yaml"), os.path.join(folder, "conf"))
        with open(os.path.join(ROOT, "conf", "supervisord.conf")) as src, open(self.conf, "w") as dst:
            dst.write(src.read() + "\n[inet_http_server]\nport=127.0.0.1:%d\nusername=ops\npassword=%s\n"
                      % (self.inet_port, self.password))  # for the page's remote supervisorctl
        for name in ("Makefile", "tests"):
            os.symlink(os.path.join(ROOT, name), os.path.join(folder, name))
        bin_dir = os.path.dirname(sys.executable)
        for name in ("python", "sidecar-plugin", "supervisorctl", "supervisord"):
            real = sys.executable if name == "python" else os.path.join(bin_dir, name)
            path = os.path.join(folder, ".venv", "bin", name)
            with open(path, "w") as fh:
                fh.write(f"#!/bin/sh\nexec {shlex.quote(real)} \"$@\"\n")
            os.chmod(path, 0o755)
        self.env = self.command_env()
        from demo import demo_profile  # run/profile.demo.yaml, as make demo writes it (operations.md copies it)

        demo_profile(self.out, "http://127.0.0.1:9/v1")  # the stand-in LiteLLM calls no upstream
        res = subprocess.run([".venv/bin/sidecar-plugin", "render", "--profile", "run/profile.demo.yaml",
                              "--out-dir", "run", "--port", str(self.port), "--binary", fake_binary(folder)],
                             cwd=folder, env=self.env, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr

    def command_env(self) -> Dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("SUPERVISOR_SERVER_URL", "SIDECAR_STATE_FILE", "AGENTROUTE_MASTER_KEY")}
        return dict(env, OPENROUTER_API_KEY=PLACEHOLDER_KEY, PWD=self.dir)

    def start_supervisord(self, wait_state: Optional[str] = "running", timeout: float = 30) -> None:
        # the clone's configuration daemonizes; -n keeps it in the session this test owns
        self.proc = subprocess.Popen([sys.executable, "-m", "supervisor.supervisord", "-n", "-c", self.conf],
                                     cwd=self.dir, env=self.env, start_new_session=True,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # a daemonized supervisord is reaped by init; this one is the test's child: reap it as it exits, so
        # that make stop (which waits for its pid to leave /proc) sees it gone
        threading.Thread(target=self.proc.wait, daemon=True).start()
        poll(self._rpc_up, 20, what="supervisord's socket")
        if wait_state:
            self.wait_state(wait_state, timeout)

    def typed(self, text: str) -> str:
        """The command as the test types it: the substitutions, and the demo's tools for bare names."""
        for page_text, here in SUBSTITUTIONS:
            text = text.replace(page_text, here.format(port=self.port, inet=self.inet_port, password=self.password))
        head = text.split(" ", 1)[0]
        if head in BARE:
            text = BARE[head] + text[len(head):]
        return text

    def run(self, cmd: Command, before: List[str]) -> Optional[str]:
        """Run one command (after the block's earlier assignments); return what is wrong, or None."""
        script = "\n".join(before + [self.typed(cmd.text)])
        res = subprocess.run(["bash", "-c", script], cwd=self.dir, env=self.env, capture_output=True, text=True,
                             timeout=180)
        if res.returncode != 0:
            return f"{ident(cmd)}: {cmd.text!r} exited {res.returncode}: {res.stdout[-500:]}{res.stderr[-500:]}"
        if cmd.output:
            want = [re.escape(self.typed(line).strip()).replace("…", ".*") for line in cmd.output if line.strip()]
            got = [line.strip() for line in res.stdout.strip().split("\n")]
            if len(want) != len(got) or not all(re.fullmatch(w, g) for w, g in zip(want, got)):
                return f"{ident(cmd)}: {cmd.text!r} printed {res.stdout!r}, the page shows {cmd.output!r}"
        if cmd.text.startswith("curl") and not answered(res.stdout):
            return f"{ident(cmd)}: {cmd.text!r}: no answer from the sidecar: {res.stdout!r}"
        return None


def answered(body: str) -> bool:
    """A JSON answer that is no error (curl -s exits 0 on any HTTP status)."""
    try:
        doc = json.loads(body)
    except ValueError:
        return False
    return isinstance(doc, dict) and "error" not in doc


def is_assignment(text: str) -> bool:
    return bool(re.match(r"^[a-z_]+=\$\(", text))


@pytest.fixture
def clone(tmp_path):
    made = Clone(str(tmp_path / "clone"))
    try:
        yield made
    finally:
        made.cleanup()


def test_every_command_not_only_checked_runs_in_a_clone_as_the_page_shows(clone):
    runnable = [c for c in COMMANDS if runs_in_clone(c)]
    ordered = [c for c in runnable if c.text not in LAST] + [c for c in runnable if c.text in LAST]
    clone.start_supervisord()
    wrong, assignments = [], {}
    for cmd in ordered:
        before = assignments.get((cmd.page, cmd.block), [])
        problem = clone.run(cmd, before)
        if problem:
            wrong.append(problem)
        if is_assignment(cmd.text):
            assignments.setdefault((cmd.page, cmd.block), []).append(clone.typed(cmd.text))
    assert not wrong, "\n".join(wrong)
    assert any(c.text == "make stop" for c in ordered)
    poll(lambda: clone.proc.poll() is not None, 30, what="make stop to end supervisord")
    assert poll(lambda: not clone.marked(), 15, what="the sidecar's tree to be gone")


def test_the_python_gateway_example_runs_in_the_clone(clone):
    """The page's Python gateway (the official anthropic SDK) against the stand-in: it prints a count."""
    blocks = [(page, start, "\n".join(body)) for page in PAGES for start, lang, body in fenced(page)
              if lang == "python" and "run/state.json" in "\n".join(body)]
    assert blocks, "the gateway's Python example is gone"
    clone.start_supervisord()
    for page, start, code in blocks:
        res = subprocess.run([".venv/bin/python", "-c", code], cwd=clone.dir, env=clone.env, capture_output=True,
                             text=True, timeout=120)
        assert res.returncode == 0, f"{page}:{start}: {res.stdout}{res.stderr}"
        assert res.stdout.strip().isdigit(), f"{page}:{start}: {res.stdout}{res.stderr}"


# -- the pages themselves --

def test_python_blocks_compile_and_import_what_exists():
    import importlib

    seen = 0
    for page in PAGES:
        for start, lang, body in fenced(page):
            if lang != "python":
                continue
            seen += 1
            tree = compile("\n".join(body), f"{page}:{start}", "exec", ast.PyCF_ONLY_AST)
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module.startswith("sidecar_plugin"):
                    module = importlib.import_module(node.module)
                    missing = [a.name for a in node.names if not hasattr(module, a.name)]
                    assert not missing, f"{page}:{start}: {node.module} has no {missing}"
    assert seen >= 2


def test_each_docs_page_says_what_it_holds_and_the_readme_links_it():
    readme = read("README.md")
    for page in PAGES[1:]:
        lines = read(page).split("\n")
        assert lines[0].startswith("# "), page
        assert lines[1] == "", page
        assert lines[2].startswith("What this page holds: "), page
        assert f"]({page})" in readme, f"the README does not link {page}"


def anchors(page: str) -> set:
    """GitHub's anchors for the headings of a page."""
    found = set()
    text = re.sub(r"^```.*?^```", "", read(page), flags=re.M | re.S)
    for title in re.findall(r"^#+ (.+)$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", title.lower().replace("`", "")).replace(" ", "-")
        found.add(slug)
    return found


def test_every_relative_link_resolves():
    seen = 0
    for page in PAGES:
        text = re.sub(r"^```.*?^```", "", read(page), flags=re.M | re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+:", target):
                continue
            seen += 1
            path, _, anchor = target.partition("#")
            resolved = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
            assert os.path.exists(os.path.join(ROOT, resolved)), f"{page}: {target}: no {resolved}"
            if anchor:
                assert anchor in anchors(resolved), f"{page}: {target}: no heading #{anchor} in {resolved}"
    assert seen > 20


def test_every_path_of_the_clone_the_pages_name_exists():
    roots = ("sidecar_plugin/", "tests/", "conf/", "benchmarks/", "docs/", ".ci/")
    for page in PAGES:
        for path in re.findall(r"`([^`\s]+)`", read(page)):
            if path.startswith(roots) and not any(ch in path for ch in "*<>"):
                assert os.path.exists(os.path.join(ROOT, path.rstrip("/"))), f"{page}: `{path}` does not exist"


def test_the_layout_section_names_every_module():
    """docs/how-it-works.md's layout is the one place that says where each module lives: it stays complete."""
    text = read("docs/how-it-works.md")
    layout = text[text.index("## How the package is laid out"):].split("\n## ")[0]
    named = {word for quoted in re.findall(r"`([^`]+)`", layout) for word in re.findall(r"\w+", quoted)}
    modules = {os.path.splitext(os.path.basename(p))[0]
               for p in glob.glob(os.path.join(ROOT, "sidecar_plugin", "**", "*.py"), recursive=True)}
    missing = sorted(m for m in modules - {"__init__", "__main__"} if m not in named)
    assert not missing, f"the layout section does not name {missing}"
