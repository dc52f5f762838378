"""``sidecar-plugin``: argument parsing and exit codes only; the work lives elsewhere.

Exit codes: 0 success; 2 bad input (one line, no traceback); 3 LiteLLM not
found (render, start) or, for ``status``, not running; 4 state unknown
(missing, corrupt or stale state file); 1 anything else that failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional

from sidecar_plugin import __version__

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_NOT_RUNNING, EXIT_UNKNOWN = 0, 1, 2, 3, 4
EXIT_NO_BINARY = 3


class CliError(Exception):
    """A failure to report as one line with an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAIL) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise CliError(f"{self.prog}: {message}", EXIT_USAGE)


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be more than 0 (got {text})")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="sidecar-plugin", description="Run AgentRoute's LiteLLM sidecar under supervisord.")
    p.add_argument("--version", action="version", version=f"sidecar-plugin {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    r = sub.add_parser("render", help="render litellm.yaml, master.key and the supervisord include")
    _render_options(r)
    ap = sub.add_parser("apply", help="render, update supervisord and restart what changed; "
                        "roll back when the new sidecar does not become healthy")
    _render_options(ap)
    ap.add_argument("-s", "--server-url", default=None,
                    help="supervisord URL (default: $SUPERVISOR_SERVER_URL, else unix:///run/supervisor.sock)")
    ap.add_argument("--timeout", type=_positive(float), default=None,
                    help="seconds to wait for running (default: the health timeout plus 10)")

    li = sub.add_parser("listen", help="the supervisord event listener (run by supervisord)")
    li.add_argument("--program", default=None, help="the sidecar program (a fleet: --sidecar instead)")
    li.add_argument("--group", default=None, help="supervisord group (default: the program name)")
    li.add_argument("--host", default="127.0.0.1")
    li.add_argument("--port", type=int, default=None)
    li.add_argument("--state-file", default=None)
    li.add_argument("--log-file", default=None)
    li.add_argument("--config", default="", help="LiteLLM config, read only to redact its secrets")
    li.add_argument("--root", default=None, help="a fleet's folder: each sidecar's files in ROOT/PROGRAM/")
    li.add_argument("--sidecar", action="append", default=[], metavar="PROGRAM=PORT",
                    help="one sidecar of a fleet (repeat for each)")
    li.add_argument("--state-subdir", default="", metavar="NAME",
                    help="a fleet under --user: each state file in ROOT/PROGRAM/NAME/")
    li.add_argument("--metrics-file", default=None, help="write Prometheus text metrics here")
    li.add_argument("--health-timeout", type=_positive(float), default=20.0)
    li.add_argument("--probe-interval", type=_positive(float), default=1.0)
    li.add_argument("--probe-timeout", type=_positive(float), default=1.0)
    li.add_argument("--starting-probe-interval", type=_positive(float), default=0.1)
    li.add_argument("--failure-threshold", type=_positive(int), default=3)

    for name, text in (("status", "show the sidecars' state (exit 0 running, 3 not, 4 unknown)"),
                       ("wait", "wait until the sidecar reaches a state"),
                       ("start", "start the sidecar and wait until it is running"),
                       ("stop", "stop the sidecar; returns when its tree is gone and the port free")):
        c = sub.add_parser(name, help=text)
        c.add_argument("--state-file", default=os.environ.get("SIDECAR_STATE_FILE"),
                       help="default: $SIDECAR_STATE_FILE, else asked from supervisord")
        c.add_argument("--program", default=None,
                       help="which sidecar (default: the one configured; status: every one)")
        c.add_argument("-s", "--server-url", default=None,
                       help="supervisord URL (default: $SUPERVISOR_SERVER_URL, else unix:///run/supervisor.sock)")
        if name == "status":
            c.add_argument("--json", action="store_true", help="print the state file's JSON")
        if name == "wait":
            c.add_argument("--state", default="running", choices=["running", "stopped", "starting", "crashed"])
        if name != "status":
            c.add_argument("--timeout", type=_positive(float), default=None if name != "stop" else 10.0)
    return p


def _render_options(r: argparse.ArgumentParser) -> None:
    r.add_argument("--profile", dest="profiles", action="append", required=True,
                   help="AgentRoute profile (YAML or JSON) or a folder of them; repeat for several sidecars")
    r.add_argument("--out-dir", required=True, help="folder for the rendered files")
    r.add_argument("--port", type=int, default=None,
                   help="sidecar port (default: the profile's, else 4000; several profiles: the first to give out)")
    r.add_argument("--host", default="127.0.0.1", help="address LiteLLM binds (default 127.0.0.1)")
    r.add_argument("--program", default=None, help="supervisord program name (default agentroute-sidecar)")
    r.add_argument("--binary", default="litellm", help="LiteLLM executable, resolved now to an absolute path")
    r.add_argument("--workers", type=int, default=1, help="LiteLLM --num_workers")
    r.add_argument("--api-key-env", default="OPENROUTER_API_KEY", help="variable holding the OpenRouter key")
    r.add_argument("--master-key-env", default="AGENTROUTE_MASTER_KEY",
                   help="variable holding the master key (unset: generate one into master.key)")
    r.add_argument("--health-timeout", type=float, default=20.0, help="seconds to become healthy")
    r.add_argument("--stop-timeout", type=int, default=10, help="supervisord stopwaitsecs")
    r.add_argument("--state-file", default=None, help="default: OUT_DIR/state.json")
    r.add_argument("--log-file", default=None, help="default: OUT_DIR/litellm.log")
    r.add_argument("--no-autostart", action="store_true", help="do not start it with supervisord")
    r.add_argument("--user", default="", help="run LiteLLM and the listener as this user (render as root: "
                   "the rendered files and the folder are given to it)")
    r.add_argument("--metrics-file", default=None,
                   help="the listener writes Prometheus text metrics here (node_exporter's textfile collector)")


def render_request(a: argparse.Namespace) -> Any:
    """Return the RenderRequest of the options ``render`` and ``apply`` share."""
    from dataclasses import fields

    from sidecar_plugin.fleet import RenderRequest

    return RenderRequest(**{f.name: getattr(a, f.name) for f in fields(RenderRequest)})


def cmd_render(a: argparse.Namespace) -> int:
    from sidecar_plugin import fleet
    from sidecar_plugin.outlock import out_dir_lock

    fleet.build(render_request(a), os.environ)  # every check first: bad input writes nothing, not even the folder
    with out_dir_lock(a.out_dir):  # then again under the lock: master.key may have just been written
        rendered = fleet.build(render_request(a), os.environ)
        changes = fleet.write(rendered)
    for path, changed in changes:
        print(f"{'changed' if changed else 'unchanged':<9} {path}")
    return EXIT_OK


def cmd_apply(a: argparse.Namespace) -> int:
    from sidecar_plugin import fleet
    from sidecar_plugin.apply import ApplyError, apply
    from sidecar_plugin.outlock import out_dir_lock
    from sidecar_plugin.supervisor_rpc import default_server_url, rpc_proxy

    fleet.build(render_request(a), os.environ)
    timeout = a.timeout if a.timeout is not None else a.health_timeout + 10.0
    url = a.server_url or default_server_url()
    try:
        with out_dir_lock(a.out_dir):  # one apply at a time: each rolls back to its own snapshot
            rendered = fleet.build(render_request(a), os.environ)
            outcome = apply(rendered, rpc_proxy(url), timeout, lambda line: print(line, flush=True))
    except ApplyError as exc:
        print(f"sidecar-plugin: apply failed: {exc}", file=sys.stderr)
        for line in exc.log_tail:
            print(f"  {line}", file=sys.stderr)
        print(f"changed: {'false' if exc.rolled_back else 'true'}")
        return EXIT_FAIL
    for doc in outcome.running:
        print(f"{doc.get('program')}: running (pid {doc.get('pid')}, port {doc.get('port')})")
    if not outcome.changed:
        print("nothing to do: the files and supervisord already match the profiles")
    print(f"changed: {'true' if outcome.changed else 'false'}")
    return EXIT_OK


def cmd_listen(a: argparse.Namespace) -> int:
    from sidecar_plugin import logs
    from sidecar_plugin.listener import run
    from sidecar_plugin.redact import Redactor, secrets_from_config
    from sidecar_plugin.render import EXIT_REFUSED
    from sidecar_plugin.targets import TargetError, listen_targets

    # stdout is supervisord's protocol channel: keep it private, send fd 1 to stderr.
    proto_out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    log = logging.getLogger("sidecar_plugin.listener")
    try:
        targets = listen_targets(a)
    except TargetError as exc:
        logs.setup(sys.stderr, Redactor)
        log.error("refusing to run: %s", exc)
        return EXIT_REFUSED
    redactor = Redactor([s for t in targets for s in secrets_from_config(t.config_path)])
    logs.setup(sys.stderr, lambda: redactor)
    for target in targets:
        if not _lock(target.state_file, log):
            return EXIT_REFUSED
    return run(targets, sys.stdin.buffer, proto_out, metrics_file=a.metrics_file)


def _lock(state_file: str, log: logging.Logger) -> bool:
    """Own the state file, or say why not: two listeners for one program would contradict each other."""
    from sidecar_plugin.statefile import LockHeld, lock_state_file

    deadline = time.monotonic() + 3.0
    while True:
        try:
            lock_state_file(state_file)
            return True
        except LockHeld as exc:
            if time.monotonic() >= deadline:
                log.error("refusing to run: %s; two listeners for one program would contradict each other", exc)
                return False
            time.sleep(0.2)
        except OSError as exc:
            log.error("cannot lock %s.lock: %s", state_file, exc.strerror or exc)
            return False


def _programs(a: argparse.Namespace, several: bool = False) -> List[str]:
    """Return which sidecars a command is about: ``--program``, else what supervisord runs.

    One configured sidecar needs no flag; with several, ``status`` shows them
    all and the other commands ask for ``--program``.
    """
    from sidecar_plugin.client import configured_sidecars
    from sidecar_plugin.discovery import DEFAULT_PROGRAM
    from sidecar_plugin.statefile import StateUnavailable, read_state

    if a.program:
        return [a.program]
    if a.state_file:
        try:
            return [read_state(a.state_file, max_age=float("inf")).program]
        except StateUnavailable:
            return [DEFAULT_PROGRAM]
    try:
        found = sorted(configured_sidecars(a.server_url))
    except StateUnavailable:
        found = []
    if len(found) > 1 and not several:
        raise CliError(f"several sidecars are configured ({', '.join(found)}): name one with --program", EXIT_USAGE)
    return found or [DEFAULT_PROGRAM]


def _sidecar(a: argparse.Namespace, program: Optional[str] = None) -> Any:
    from sidecar_plugin.client import Sidecar

    if program is None:
        program = a.program = _programs(a)[0]
    return Sidecar(state_file=a.state_file, program=program, server_url=a.server_url)


def cmd_status(a: argparse.Namespace) -> int:
    from sidecar_plugin.client import state_dict
    from sidecar_plugin.display import status_lines
    from sidecar_plugin.statefile import StateUnavailable

    docs = []
    for program in _programs(a, several=True):
        try:
            path = _sidecar(a, program).state_file
        except StateUnavailable as exc:
            raise CliError(f"state unknown: {exc}", EXIT_UNKNOWN) from None
        docs.append((program, path, state_dict(path)))
    if a.json:
        out = [{k: v for k, v in doc.items() if k != "available"} for _, _, doc in docs]
        print(json.dumps(out[0] if len(out) == 1 else out, sort_keys=True, indent=2))
    worst = EXIT_OK
    for program, path, doc in docs:
        if not a.json:
            print("\n".join(status_lines(doc, program)))
        if not doc.get("available") or doc.get("is_stale"):
            if not a.json and not doc.get("available"):
                print(f"  ({doc.get('error') or 'no state file yet: ' + path})", file=sys.stderr)
            worst = EXIT_UNKNOWN
        elif doc.get("state") != "running":
            worst = max(worst, EXIT_NOT_RUNNING)
    return worst


def cmd_wait(a: argparse.Namespace) -> int:
    from sidecar_plugin import control
    from sidecar_plugin.client import state_dict

    sc = _sidecar(a)
    path = sc.state_file
    progress = _Progress(a.program, a.state)

    def get() -> Dict[str, Any]:
        doc = state_dict(path)
        progress.show(doc)
        return doc

    try:
        doc = control.wait_for_state(get, a.state, a.timeout)
    finally:
        progress.done()
    print(f"{a.program}: {doc['state']}")
    return EXIT_OK


class _Progress:
    """A visible progress line on stderr while waiting (LiteLLM takes seconds to start)."""

    def __init__(self, program: str, target: str) -> None:
        self.program, self.target = program, target
        self.t0 = time.monotonic()
        self.last = -10.0
        self.tty = sys.stderr.isatty()

    def show(self, doc: Dict[str, Any]) -> None:
        now = time.monotonic()
        if now - self.last < (0.5 if self.tty else 5.0):
            return
        self.last = now
        line = (f"waiting for {self.program} to be {self.target}: {doc.get('state', 'unknown')}"
                f" ({now - self.t0:.0f} s)")
        if doc.get("error") and doc.get("state") == "crashed":
            line += f": {doc['error']}"
        sys.stderr.write(("\r\033[K" + line) if self.tty else line + "\n")
        sys.stderr.flush()

    def done(self) -> None:
        if self.tty and self.last > -10.0:
            sys.stderr.write("\n")
            sys.stderr.flush()


def cmd_start(a: argparse.Namespace) -> int:
    sc = _sidecar(a)
    sc.start(timeout=a.timeout)
    doc = sc.read()
    print(f"{a.program}: running (pid {doc.pid}, port {doc.port})")
    return EXIT_OK


def cmd_stop(a: argparse.Namespace) -> int:
    _sidecar(a).stop(timeout=a.timeout)
    print(f"{a.program}: stopped (no process left, port free)")
    return EXIT_OK


COMMANDS: Dict[str, Callable[[argparse.Namespace], int]] = {
    "render": cmd_render, "apply": cmd_apply, "listen": cmd_listen, "status": cmd_status,
    "wait": cmd_wait, "start": cmd_start, "stop": cmd_stop,
}


def main(argv: Optional[List[str]] = None) -> int:
    """Run one command; every failure becomes one line on stderr and an exit code."""
    from sidecar_plugin.errors import BinaryNotFoundError, SidecarError, SidecarStartError
    from sidecar_plugin.profile import ProfileError
    from sidecar_plugin.render import RenderError

    args_list = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args_list
    if "listen" not in args_list:  # the listener's stdout is the protocol; it takes no -s anyway
        _hide_credentials(args_list)
    try:
        args = build_parser().parse_args(args_list)
        return COMMANDS[args.command](args)
    except CliError as exc:
        print(str(exc), file=sys.stderr)
        return exc.code
    except BinaryNotFoundError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_NO_BINARY
    except (ProfileError, RenderError) as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    except SidecarStartError as exc:
        print(f"sidecar-plugin: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except SidecarError as exc:
        print(f"sidecar-plugin: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        if debug:
            raise
        print(f"sidecar-plugin: {exc.strerror or exc}{': ' + exc.filename if getattr(exc, 'filename', None) else ''}",
              file=sys.stderr)
        return EXIT_FAIL
    except Exception as exc:  # the last line of defence: never a traceback without --debug
        if debug:
            raise
        print(f"sidecar-plugin: unexpected error: {type(exc).__name__}: {exc} (run with --debug for details)",
              file=sys.stderr)
        return EXIT_FAIL


class _Redacting:
    """A text stream that masks supervisord's credentials in everything written to it."""

    def __init__(self, stream: Any, redact: Callable[[str], str]) -> None:
        self._stream, self._redact = stream, redact

    def write(self, text: str) -> int:
        self._stream.write(self._redact(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _hide_credentials(args_list: List[str]) -> None:
    """Keep the password of ``-s http://user:pass@host`` (or $SUPERVISOR_PASSWORD) out of every output line."""
    from sidecar_plugin.redact import MASK, encoded_forms
    from sidecar_plugin.supervisor_rpc import credentials

    urls = [v.split("=", 1)[1] for v in args_list if v.startswith("--server-url=")]
    urls += [args_list[i + 1] for i, v in enumerate(args_list[:-1]) if v in ("-s", "--server-url")]
    found = [c for url in urls or [None] for c in credentials(url) if len(c) >= 4]
    if found:
        forms = sorted({f for c in found for f in encoded_forms(c)}, key=len, reverse=True)

        def redact(text: str) -> str:
            for form in forms:
                text = text.replace(form, MASK)
            return text
        sys.stdout = _Redacting(sys.stdout, redact)
        sys.stderr = _Redacting(sys.stderr, redact)
