"""``sidecar-plugin``: argument parsing and exit codes only; the commands live in ``commands``.

Exit codes: 0 success; 2 bad input (one line, no traceback); 3 LiteLLM not
found (render, start) or, for ``status``, not running; 4 state unknown
(missing, corrupt or stale state file); 5 ``apply``: the new configuration is
in place but a sidecar it manages is not running; 1 anything else that failed.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple, Type, cast

from sidecar_plugin import __version__
from sidecar_plugin.commands import COMMANDS, CliError
from sidecar_plugin.core.options.table import APPLY, BY_FLAG, LISTEN, RENDER, of
from sidecar_plugin.core.options.values import positive_number, switch
from sidecar_plugin.core.options.remember import KINDS, RESET_ALL
from sidecar_plugin.errors import BinaryNotFoundError, SidecarError, SidecarStartError
from sidecar_plugin.names import EXIT_FAIL, EXIT_NO_BINARY, EXIT_USAGE, STALE_AFTER, State

SERVER_URL_HELP = "supervisord URL (default: $SUPERVISOR_SERVER_URL, else unix:///run/supervisor.sock)"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise CliError(f"{self.prog}: {message}", EXIT_USAGE)


def _checked(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """Turn a parser's ValueError into argparse's one-line usage error."""
    def run(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    run.__name__ = getattr(parse, "__name__", "value")
    return run


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of every command, in the order ``--help`` lists them."""
    p = _Parser(prog="sidecar-plugin", description="Run AgentRoute's LiteLLM sidecar under supervisord.")
    p.add_argument("--version", action="version", version=f"sidecar-plugin {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    _render_options(sub.add_parser("render", help="render litellm.yaml, master.key and the supervisord include"))
    ap = sub.add_parser("apply", help="render, update supervisord and restart what changed; "
                        "roll back when the new sidecar does not become healthy")
    _render_options(ap)
    ap.add_argument("-s", "--server-url", default=None, help=SERVER_URL_HELP)
    _declared(ap, APPLY)
    _declared(sub.add_parser("listen", help="the supervisord event listener (run by supervisord)"), LISTEN)
    _state_commands(sub)
    return p


def _state_commands(sub: Any) -> None:
    """Add the commands that read or drive a running sidecar through its state file and supervisord."""
    for name, text in (("status", "show the sidecars' state (exit 0 running, 3 not, 4 unknown)"),
                       ("endpoint", "print the sidecar's base URL and the file holding its master key (never the key)"),
                       ("wait", "wait until the sidecar reaches a state"),
                       ("start", "start the sidecar and wait until it is running"),
                       ("stop", "stop the sidecar; returns when its tree is gone (and its port free, unless "
                                 "supervisord keeps it: connections then wait in its queue until a start)"),
                       ("restart", "replace the sidecar's tree, the old one serving until the new one does; "
                                   "returns when the new one runs (a launcher serving alone: supervisord's stop "
                                   "then start)")):
        c = sub.add_parser(name, help=text)
        c.add_argument("--state-file", default=os.environ.get("SIDECAR_STATE_FILE"),
                       help="default: $SIDECAR_STATE_FILE, else asked from supervisord")
        c.add_argument("--program", default=None,
                       help="which sidecar (default: the one configured; status: every one"
                            + ("; all: every one, one after the other)" if name == "restart" else ")"))
        c.add_argument("-s", "--server-url", default=None, help=SERVER_URL_HELP)
        c.add_argument("--stale-after", type=_checked(positive_number), default=STALE_AFTER,
                       help="seconds without a listener heartbeat before the state is unknown "
                            f"(default {STALE_AFTER:g})")
        if name == "status":
            c.add_argument("--json", action="store_true", help="print the state file's JSON")
        if name == "endpoint":
            c.add_argument("--json", action="store_true", help="print program, base_url and key_file as JSON")
        if name == "wait":
            c.add_argument("--state", default=State.RUNNING.value, choices=[s.value for s in State])
        if name not in ("status", "endpoint"):
            c.add_argument("--timeout", type=_checked(positive_number), default=None,
                           help="seconds (default: start/wait 300; stop: the drain window plus 30; restart: both)")


def _render_options(r: argparse.ArgumentParser) -> None:
    r.add_argument("--profile", dest="profiles", action="append", required=True,
                   help="AgentRoute profile (YAML or JSON) or a folder of them; repeat for several sidecars")
    r.add_argument("--out-dir", required=True, help="folder for the rendered files")
    _declared(r, RENDER)
    _reset_option(r)


def _declared(r: argparse.ArgumentParser, layer: str) -> None:
    """Add the options of ``layer`` as ``core.options.table`` says them.

    render's and apply's default is None, "not given": an option not given
    keeps what an earlier render was given (``core.options.remember``).
    """
    for o in of(layer):
        default = o.default if layer == LISTEN else None
        parse, words = o.parser(layer), o.help_text(layer)
        if parse is switch:
            r.add_argument(o.flag, action="store_true", default=default, help=words)
        elif o.attr == "sidecar":
            r.add_argument(o.flag, action="append", default=[], help=words)
        else:  # int and str: argparse's own words ("invalid int value")
            r.add_argument(o.flag, dest=o.attr, type=parse if parse in (int, str) else _checked(parse),
                           default=default, help=words)


def _reset_option(r: argparse.ArgumentParser) -> None:
    """Forget what an earlier render was given (core.options.remember)."""
    r.add_argument("--reset", action="append", default=[], metavar="OPTION", choices=sorted(KINDS) + [RESET_ALL],
                   help="an option given to an earlier render or apply is kept (OUT_DIR/sidecar.json) until given "
                        f"again; this puts OPTION (without --; {RESET_ALL}: every one) back to its default")


def main(argv: Optional[List[str]] = None) -> int:
    """Run one command; every failure becomes one line on stderr and an exit code."""
    from sidecar_plugin.display import PipeGuard

    args_list = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args_list
    streams = sys.stdout, sys.stderr
    if next((a for a in args_list if not a.startswith("-")), "") != "listen":  # listen: stdout is the protocol
        sys.stdout, sys.stderr = PipeGuard(sys.stdout), PipeGuard(sys.stderr)
        _hide_secrets(args_list)
    try:
        args = build_parser().parse_args(args_list)
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        code = _report(exc, debug)
        if code is None:
            raise
        return code
    finally:
        sys.stdout.flush()  # a reader gone (| head -1) is met here, by the guard, not at the interpreter's exit
        sys.stderr.flush()
        sys.stdout, sys.stderr = streams


def _first_line(exc: BaseException) -> str:
    return f"sidecar-plugin: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"


def _os_line(exc: BaseException) -> str:
    assert isinstance(exc, OSError)
    return f"sidecar-plugin: {exc.strerror or exc}{': ' + exc.filename if getattr(exc, 'filename', None) else ''}"


def _unexpected(exc: BaseException) -> str:  # the last line of defence: never a traceback without --debug
    return f"sidecar-plugin: unexpected error: {type(exc).__name__}: {exc} (run with --debug for details)"


def exit_codes() -> Dict[Type[BaseException], Tuple[Optional[int], Callable[[BaseException], str], bool]]:
    """Error class -> (exit code, None: the error's own; its line on stderr; whether ``--debug`` raises it).

    An error takes the entry of the nearest class of its own ancestry
    (``__mro__``), so the order of the entries decides nothing: a missing
    binary is a ``BinaryNotFoundError`` (3) whatever else it is. Imported
    here, not at the top: ``status`` does not pay for rendering's modules.
    """
    from sidecar_plugin.core.profiles.agentroute import ProfileError
    from sidecar_plugin.core.render.terms import RenderError
    from sidecar_plugin.shell.supervisord.supervisor import BadServerUrl

    return {
        CliError: (None, str, False),
        BinaryNotFoundError: (EXIT_NO_BINARY, str, False),
        ProfileError: (EXIT_USAGE, str, False),
        RenderError: (EXIT_USAGE, str, False),
        BadServerUrl: (EXIT_USAGE, str, False),
        SidecarStartError: (EXIT_FAIL, lambda exc: f"sidecar-plugin: {exc}", False),  # with the log's tail
        SidecarError: (EXIT_FAIL, _first_line, False),
        OSError: (EXIT_FAIL, _os_line, True),
        Exception: (EXIT_FAIL, _unexpected, True),
    }


def _report(exc: Exception, debug: bool) -> Optional[int]:
    """Print ``exc`` as its one line on stderr and return its exit code; None: let it raise (``--debug``)."""
    table = exit_codes()
    code, line, raised = next(table[c] for c in type(exc).__mro__ if c in table)
    if debug and raised:
        return None
    print(line(exc), file=sys.stderr)
    return cast(CliError, exc).code if code is None else code


def _given(args_list: List[str], flag: str) -> List[str]:
    """The values given to ``flag`` (``--flag V`` or ``--flag=V``), before any parsing."""
    return ([args_list[i + 1] for i, v in enumerate(args_list[:-1]) if v == flag]
            + [v.split("=", 1)[1] for v in args_list if v.startswith(flag + "=")])


def _hide_secrets(args_list: List[str]) -> None:
    """Keep every secret this command may know out of every output line.

    supervisord's credentials from any URL given (``-s URL``, ``-sURL``,
    ``--serv=URL``...) or from $SUPERVISOR_*, and the values of the OpenRouter
    and master key variables (a profile's bad field may echo one back).
    """
    from sidecar_plugin.display import Redacting
    from sidecar_plugin.shell.listener.redact import MASK, encoded_forms
    from sidecar_plugin.shell.render.record import kept_options
    from sidecar_plugin.shell.supervisord.supervisor import credentials

    urls: List[Optional[str]] = [v.split("=", 1)[-1] if v.startswith("-") and "=" in v else v[2:]
                                 if v.startswith("-s") else v for v in args_list if "://" in v]
    found = [c for url in urls or [None] for c in credentials(url)]
    kept = kept_options((_given(args_list, "--out-dir") or [""])[-1])  # the key variables an earlier render kept
    for option in (BY_FLAG["--api-key-env"], BY_FLAG["--master-key-env"]):
        names = [option.default] + _given(args_list, option.flag) + [str(kept.get(option.name, ""))]
        found += [os.environ.get(n, "") for n in names if n]
    found = [c for c in found if len(c) >= 4]
    if found:
        forms = sorted({f for c in found for f in encoded_forms(c)}, key=len, reverse=True)

        def redact(text: str) -> str:
            for form in forms:
                text = text.replace(form, MASK)
            return text
        sys.stdout = Redacting(sys.stdout, redact)
        sys.stderr = Redacting(sys.stderr, redact)
