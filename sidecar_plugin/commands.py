"""What each ``sidecar-plugin`` command does: wiring the parsed options to the package.

``cli`` parses and maps errors to exit codes (it imports this module, never the reverse); these functions call
the shells and print what a person (or a tool reading ``changed:``) needs. Imports are local so ``status``
does not pay for rendering and ``render`` does not pay for XML-RPC.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any, Callable, Dict, List, Optional

from sidecar_plugin.errors import SidecarError
from sidecar_plugin.names import (
    DEFAULT_PROGRAM, EXIT_FAIL, EXIT_NOT_RUNNING, EXIT_OK, EXIT_REFUSED, EXIT_UNKNOWN, EXIT_USAGE, State,
)


class CliError(SidecarError):
    """A failure to report as one line with an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAIL) -> None:
        super().__init__(message)
        self.code = code


def render_request(a: argparse.Namespace) -> Any:
    """Return the RenderRequest of the options ``render`` and ``apply`` share, the lines of those that change
    and the warnings; an option not given keeps the value the out-dir's record kept (``core.options.remember``).
    """
    from sidecar_plugin.shell.render.request import given_options, request

    return request(a.profiles, a.out_dir, given_options(vars(a)), a.reset)


def _checked_request(a: argparse.Namespace) -> None:
    """Every check before the out-dir is locked: bad input writes nothing, not even the folder; warn once."""
    from sidecar_plugin.shell.render.build import build

    asked = render_request(a)
    for line in asked.warnings + list(build(asked.req, os.environ).warnings):
        print(f"sidecar-plugin: warning: {line}", file=sys.stderr)


def cmd_render(a: argparse.Namespace) -> int:
    from sidecar_plugin.shell.render import build
    from sidecar_plugin.shell.files.outlock import out_dir_lock

    _checked_request(a)
    with out_dir_lock(a.out_dir):  # then again under the lock: master.key may have just been written
        req, lines, _ = render_request(a)
        rendered = build.build(req, os.environ)
        changes = build.write(rendered)
    for line in lines:
        print(line)
    for path, changed in changes:
        print(f"{'changed' if changed else 'unchanged':<9} {path}")
    return EXIT_OK


def cmd_apply(a: argparse.Namespace) -> int:
    from sidecar_plugin.shell.render.apply import ApplyError, apply
    from sidecar_plugin.shell.render.build import build
    from sidecar_plugin.shell.render.plugin_host import for_running
    from sidecar_plugin.shell.files.outlock import out_dir_lock
    from sidecar_plugin.shell.supervisord.supervisor import default_server_url, rpc_proxy

    _checked_request(a)
    url = a.server_url or default_server_url()
    try:
        with out_dir_lock(a.out_dir):  # one apply at a time: each rolls back to its own snapshot
            req, lines, _ = render_request(a)
            rendered = for_running(build, req, os.environ, rpc_proxy(url))
            timeout = a.timeout if a.timeout is not None else rendered.sidecars[0].health_timeout + 10.0
            outcome = apply(rendered, rpc_proxy(url), timeout, lambda line: print(line, flush=True), url,
                            reload_timeout=a.timeout, before_write=lines)  # said once something is written
    except ApplyError as exc:
        print(f"sidecar-plugin: apply failed: {exc}", file=sys.stderr)
        for line in exc.log_tail:
            print(f"  {line}", file=sys.stderr)
        print(f"changed: {'false' if exc.rolled_back else 'true'}")
        return EXIT_FAIL
    from sidecar_plugin.display import report_apply

    return report_apply(outcome, timeout)


def cmd_listen(a: argparse.Namespace) -> int:
    from sidecar_plugin.core.options.listen_args import ListenArgsError, targets_of
    from sidecar_plugin.shell.listener import logs
    from sidecar_plugin.shell.listener.protocol import run
    from sidecar_plugin.shell.listener.redact import Redactor, secrets_from_config
    from sidecar_plugin.shell.files.statefile import own_state_file

    # stdout is supervisord's protocol channel: keep it private, send fd 1 to stderr.
    proto_out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    log = logging.getLogger("sidecar_plugin.listener")
    try:
        command = targets_of(vars(a))
        targets = list(command.targets)
    except ListenArgsError as exc:
        logs.setup(sys.stderr, Redactor)
        log.error("refusing to run: %s", exc)
        return EXIT_REFUSED
    redactor = Redactor([s for t in targets for s in secrets_from_config(t.config_path)])
    logs.setup(sys.stderr, lambda: redactor)
    for target in targets:
        if not own_state_file(target.state_file, log):
            return EXIT_REFUSED
    return run(targets, sys.stdin.buffer, proto_out, metrics_file=command.metrics_file)


def _programs(a: argparse.Namespace, several: bool = False) -> List[str]:
    """Return which sidecars a command is about: ``--program``, else what supervisord runs.

    One configured sidecar needs no flag; with several, ``status`` shows them
    all and the other commands ask for ``--program``.
    """
    from sidecar_plugin.client import configured_sidecars
    from sidecar_plugin.core.state.schema import StateUnavailable
    from sidecar_plugin.shell.files.statefile import read_state

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
    return Sidecar(state_file=a.state_file, program=program, server_url=a.server_url, stale_after=a.stale_after)


def cmd_status(a: argparse.Namespace) -> int:
    from sidecar_plugin.core.state.schema import StateUnavailable
    from sidecar_plugin.display import status_lines
    from sidecar_plugin.shell.files.statefile import state_dict

    docs = []
    for program in _programs(a, several=True):
        try:
            path = _sidecar(a, program).state_file
        except StateUnavailable as exc:
            raise CliError(f"state unknown: {exc}", EXIT_UNKNOWN) from None
        docs.append((program, path, state_dict(path, a.stale_after)))
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
        elif doc.get("state") != State.RUNNING:
            worst = max(worst, EXIT_NOT_RUNNING)
    return worst


def cmd_wait(a: argparse.Namespace) -> int:
    from sidecar_plugin.display import Progress
    from sidecar_plugin.shell.supervisord import control
    from sidecar_plugin.shell.files.statefile import state_dict

    path, progress = _sidecar(a).state_file, Progress(a.program, a.state)

    def get() -> Dict[str, Any]:
        doc = state_dict(path, a.stale_after)
        progress.show(doc)
        return doc

    try:
        doc = control.wait_for_state(get, a.state, a.timeout)
    finally:
        progress.done()
    print(f"{a.program}: {doc['state']}")
    return EXIT_OK


def cmd_start(a: argparse.Namespace) -> int:
    sc = _sidecar(a)
    sc.start(timeout=a.timeout)
    doc = sc.read()
    print(f"{a.program}: running (pid {doc.pid}, port {doc.port})")
    return EXIT_OK


def cmd_stop(a: argparse.Namespace) -> int:
    from sidecar_plugin.display import stopped_line
    from sidecar_plugin.shell.files.statefile import state_dict
    (sc := _sidecar(a)).stop(timeout=a.timeout)
    print(stopped_line(a.program, state_dict(sc.state_file)))
    return EXIT_OK


def cmd_restart(a: argparse.Namespace) -> int:
    """``--program all``: every sidecar configured, one after the other (a fleet's ``[fcgi-program]``s have
    no ``[group:]`` for supervisorctl to name them together)."""
    every = a.program == "all"
    if every:
        a.program = None
    for program in _programs(a, several=True) if every else [_programs(a)[0]]:
        sc = _sidecar(a, program)
        how = "in place: the previous workers served until the new ones did" if sc.restart(timeout=a.timeout) \
            else "stopped and started by supervisord: requests waited for the start"
        doc = sc.read()
        print(f"{program}: running (pid {doc.pid}, port {doc.port}); {how}")
    return EXIT_OK


def cmd_endpoint(a: argparse.Namespace) -> int:
    """Print where the gateway sends its requests and where the key it sends is kept; never the key."""
    from sidecar_plugin.core.state.schema import StateUnavailable

    found = []
    for program in _programs(a, several=True):
        sc = _sidecar(a, program)
        try:
            found.append({"program": program, "base_url": sc.base_url, "key_file": sc.key_file()})
        except StateUnavailable as exc:
            raise CliError(f"endpoint unknown: {exc}", EXIT_UNKNOWN) from None
    from sidecar_plugin.display import endpoint_text

    print(json.dumps(found[0] if len(found) == 1 else found, sort_keys=True, indent=2) if a.json
          else endpoint_text(found))
    return EXIT_OK


COMMANDS: Dict[str, Callable[[argparse.Namespace], int]] = {
    "render": cmd_render, "apply": cmd_apply, "listen": cmd_listen, "status": cmd_status,
    "wait": cmd_wait, "start": cmd_start, "stop": cmd_stop, "restart": cmd_restart, "endpoint": cmd_endpoint,
}
