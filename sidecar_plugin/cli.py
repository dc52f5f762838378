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
    r.add_argument("--profile", required=True, help="AgentRoute profile (YAML or JSON)")
    r.add_argument("--out-dir", required=True, help="folder for the rendered files")
    r.add_argument("--port", type=int, default=None, help="sidecar port (default: the profile's, else 4000)")
    r.add_argument("--host", default="127.0.0.1", help="address LiteLLM binds (default 127.0.0.1)")
    r.add_argument("--program", default="agentroute-sidecar", help="supervisord program name")
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

    li = sub.add_parser("listen", help="the supervisord event listener (run by supervisord)")
    li.add_argument("--program", required=True)
    li.add_argument("--group", default=None, help="supervisord group (default: the program name)")
    li.add_argument("--host", default="127.0.0.1")
    li.add_argument("--port", type=int, required=True)
    li.add_argument("--state-file", required=True)
    li.add_argument("--log-file", required=True)
    li.add_argument("--config", default="", help="LiteLLM config, read only to redact its secrets")
    li.add_argument("--health-timeout", type=_positive(float), default=20.0)
    li.add_argument("--probe-interval", type=_positive(float), default=1.0)
    li.add_argument("--probe-timeout", type=_positive(float), default=1.0)
    li.add_argument("--starting-probe-interval", type=_positive(float), default=0.1)
    li.add_argument("--failure-threshold", type=_positive(int), default=3)

    for name, text in (("status", "show the sidecar's state (exit 0 running, 3 not, 4 unknown)"),
                       ("wait", "wait until the sidecar reaches a state"),
                       ("start", "start the sidecar and wait until it is running"),
                       ("stop", "stop the sidecar; returns when its tree is gone and the port free")):
        c = sub.add_parser(name, help=text)
        c.add_argument("--state-file", default=os.environ.get("SIDECAR_STATE_FILE"),
                       help="default: $SIDECAR_STATE_FILE, else asked from supervisord")
        c.add_argument("--program", default="agentroute-sidecar")
        c.add_argument("-s", "--server-url", default=None,
                       help="supervisord URL (default: $SUPERVISOR_SERVER_URL, else unix:///run/supervisor.sock)")
        if name == "status":
            c.add_argument("--json", action="store_true", help="print the state file's JSON")
        if name == "wait":
            c.add_argument("--state", default="running", choices=["running", "stopped", "starting", "crashed"])
        if name != "status":
            c.add_argument("--timeout", type=_positive(float), default=None if name != "stop" else 10.0)
    return p


def cmd_render(a: argparse.Namespace) -> int:
    from sidecar_plugin.profile import load_profile
    from sidecar_plugin.render import (
        RenderOptions, check_options, choose_master_key, listener_entry_point, optional_port,
        lookup_user, prepare_log_file, render_files, resolve_binary, write_rendered,
    )

    profile = load_profile(os.path.abspath(a.profile))
    out_dir = os.path.abspath(a.out_dir)
    opts = RenderOptions(
        out_dir=out_dir, binary="", listener_command=listener_entry_point(),
        port=optional_port(profile, a.port), host=a.host, program=a.program, workers=a.workers,
        health_timeout=a.health_timeout, stop_timeout=a.stop_timeout,
        state_file=os.path.abspath(a.state_file or os.path.join(out_dir, "state.json")),
        log_file=os.path.abspath(a.log_file or os.path.join(out_dir, "litellm.log")),
        listener_log_file=os.path.join(out_dir, "listener.log"),
        autostart=not a.no_autostart, user=a.user,
    )
    check_options(opts)
    owner = lookup_user(a.user) if a.user else None
    if owner is not None and os.geteuid() != 0 and owner[0] != os.geteuid():
        raise CliError(f"--user {a.user}: render as root (or as {a.user}) so the files can be given to it", EXIT_USAGE)
    api_key = os.environ.get(a.api_key_env, "")
    if not api_key:
        raise CliError(f"{a.api_key_env} is not set: export the OpenRouter API key in it "
                       "(or name another variable with --api-key-env)", EXIT_USAGE)
    binary = resolve_binary(a.binary, extra_dirs=[os.path.dirname(os.path.abspath(sys.executable))])
    opts = RenderOptions(**{**opts.__dict__, "binary": binary})
    master_key, keep_file = choose_master_key(os.environ, a.master_key_env, out_dir)
    if not os.path.isdir(out_dir):
        try:
            os.makedirs(out_dir, mode=0o755)
        except OSError as exc:
            raise CliError(f"--out-dir {a.out_dir}: cannot create it: {exc.strerror or exc}", EXIT_USAGE) from None
    files = render_files(profile, opts, api_key, master_key, keep_file)
    if owner is not None:
        os.chown(out_dir, *owner)  # the listener writes its state file and history here
    for path, changed in write_rendered(files, owner):
        print(f"{'changed' if changed else 'unchanged':<9} {path}")
    prepare_log_file(opts.log_file, owner)
    return EXIT_OK


def cmd_listen(a: argparse.Namespace) -> int:
    from sidecar_plugin.listener import ListenerOptions, run
    from sidecar_plugin.render import EXIT_REFUSED
    from sidecar_plugin.statefile import LockHeld, lock_state_file

    # stdout is supervisord's protocol channel: keep it private, send fd 1 to stderr.
    proto_out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format=f"%(asctime)s sidecar-listener[{os.getpid()}] %(levelname)s %(message)s")
    deadline = time.monotonic() + 3.0
    while True:
        try:
            lock_state_file(a.state_file)
            break
        except LockHeld as exc:
            if time.monotonic() >= deadline:
                logging.getLogger("sidecar_plugin.listener").error(
                    "refusing to run: %s; two listeners for one program would contradict each other", exc)
                return EXIT_REFUSED
            time.sleep(0.2)
        except OSError as exc:
            logging.getLogger("sidecar_plugin.listener").error(
                "cannot lock %s.lock: %s", a.state_file, exc.strerror or exc)
            return EXIT_REFUSED
    opts = ListenerOptions(
        program=a.program, group=a.group, host=a.host, port=a.port, state_file=os.path.abspath(a.state_file),
        log_file=a.log_file, config_path=a.config, health_timeout=a.health_timeout,
        probe_interval=a.probe_interval, probe_timeout=a.probe_timeout,
        starting_probe_interval=a.starting_probe_interval, failure_threshold=a.failure_threshold,
    )
    return run(opts, sys.stdin.buffer, proto_out)


def _sidecar(a: argparse.Namespace) -> Any:
    from sidecar_plugin.client import Sidecar

    return Sidecar(state_file=a.state_file, program=a.program, server_url=a.server_url)


def cmd_status(a: argparse.Namespace) -> int:
    from sidecar_plugin.client import state_dict
    from sidecar_plugin.display import status_lines
    from sidecar_plugin.statefile import StateUnavailable

    try:
        path = _sidecar(a).state_file
    except StateUnavailable as exc:
        raise CliError(f"state unknown: {exc}", EXIT_UNKNOWN) from None
    doc = state_dict(path)
    if a.json:
        out = {k: v for k, v in doc.items() if k not in ("available",)}
        print(json.dumps(out, sort_keys=True, indent=2))
    else:
        print("\n".join(status_lines(doc, a.program)))
    if not doc.get("available") or doc.get("is_stale"):
        if not a.json and not doc.get("available"):
            print(f"  ({doc.get('error') or 'no state file yet: ' + path})", file=sys.stderr)
        return EXIT_UNKNOWN
    return EXIT_OK if doc.get("state") == "running" else EXIT_NOT_RUNNING


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
    "render": cmd_render, "listen": cmd_listen, "status": cmd_status,
    "wait": cmd_wait, "start": cmd_start, "stop": cmd_stop,
}


def main(argv: Optional[List[str]] = None) -> int:
    """Run one command; every failure becomes one line on stderr and an exit code."""
    from sidecar_plugin.errors import BinaryNotFoundError, SidecarError, SidecarStartError
    from sidecar_plugin.profile import ProfileError
    from sidecar_plugin.render import RenderError

    args_list = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args_list
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
