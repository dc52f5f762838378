"""The ``supervisorctl sidecar ...`` plugin.

Configured with::

    [ctlplugin:sidecar]
    supervisor.ctl_factory = sidecar_plugin.ctl:make_ctlplugin

It talks only XML-RPC (``sidecar.getState`` and ``supervisor.*``), so it works
against a remote supervisord (``supervisorctl -s http://host:port``) exactly as
against the local socket.
"""

from __future__ import annotations

import argparse
import shlex
import xmlrpc.client
from typing import Any, List

from supervisor.supervisorctl import ControllerPluginBase, LSBStatusExitStatuses

from supervisor.xmlrpc import Faults

from sidecar_plugin.core.options.values import positive_number
from sidecar_plugin.display import status_lines, stopped_line
from sidecar_plugin.errors import SidecarError
from sidecar_plugin.names import DEFAULT_PROGRAM, State, process_name
from sidecar_plugin.shell.supervisord import control
from sidecar_plugin.shell.supervisord.supervisor import fault_words, stop_window, tell_stop, tolerate, unreachable

USAGE = """sidecar status [program ...]       show each sidecar's state (all by default)
sidecar wait [--state S] [--timeout T] [program]   wait until it reaches state S (running)
sidecar start [--timeout T] [program]  start it and wait until it answers healthy
sidecar stop [--timeout T] [program]   stop it; returns when its tree is gone (connections then wait where supervisord keeps the port)
sidecar restart [--timeout T] [program ...|all]  replace each tree, the old one serving until the new one does (else stop + start)"""  # noqa: E501 (the usage as supervisorctl prints it)


ALL = "all"  # supervisorctl's own word for every program


class _ArgError(SidecarError):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _ArgError(message)


def _seconds(text: str) -> float:
    """A timeout: a finite number of seconds above 0 (nan, inf, 0 and below are refused)."""
    try:
        return positive_number(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> _Parser:
    p = _Parser(prog="sidecar", add_help=False)
    p.add_argument("action", choices=["status", "wait", "start", "stop", "restart"])
    p.add_argument("programs", nargs="*")
    p.add_argument("--timeout", type=_seconds, default=None)
    p.add_argument("--state", default=State.RUNNING.value, choices=[s.value for s in State])
    return p


class SidecarControllerPlugin(ControllerPluginBase):
    """Adds the ``sidecar`` command to supervisorctl."""

    name = "sidecar"

    def __init__(self, controller: Any, **config: Any) -> None:
        super().__init__(controller)

    def _sidecar(self) -> Any:
        return self.ctl.get_server_proxy("sidecar")

    def _supervisor(self) -> Any:
        return self.ctl.get_server_proxy("supervisor")

    def _fail(self, message: str, status: int = LSBStatusExitStatuses.UNKNOWN) -> None:
        self.ctl.output(f"sidecar: {message}")
        self.ctl.exitstatus = status

    def do_sidecar(self, arg: str) -> None:
        """sidecar status|wait|start|stop|restart [program]: the AgentRoute LiteLLM sidecar."""
        if not self.ctl.upcheck():
            self.ctl.exitstatus = LSBStatusExitStatuses.UNKNOWN
            return
        try:
            args = _parser().parse_intermixed_args(shlex.split(arg))  # options before or after the program
        except (_ArgError, ValueError) as exc:
            self._fail(str(exc), 2)
            if "argument --" not in str(exc):  # a bad option value is one line; a bad command shows the usage
                self.help_sidecar()
            return
        try:
            getattr(self, "_" + args.action)(args)
        except xmlrpc.client.Fault as exc:
            self._fail(fault_words(exc))
        except SidecarError as exc:
            self._fail(str(exc), 1)
        except OSError as exc:
            self._fail(str(unreachable(str(getattr(self.ctl.options, "serverurl", "") or ""), exc,
                                       how="point at it with supervisorctl -c FILE or -s URL")))

    def _programs(self, args: argparse.Namespace) -> List[str]:
        if args.programs:
            return list(args.programs)
        try:
            listed = self._sidecar().listPrograms()
        except xmlrpc.client.Fault:
            listed = []
        return listed or [DEFAULT_PROGRAM]

    def _one(self, args: argparse.Namespace) -> str:
        programs = self._programs(args)
        if len(programs) > 1 and not args.programs:
            raise SidecarError("several sidecars are configured; name one: " + ", ".join(programs))
        return programs[0]

    def _status(self, args: argparse.Namespace) -> None:
        worst = 0
        for program in self._programs(args):
            doc = self._sidecar().getState(program)
            for line in status_lines(doc, program):
                self.ctl.output(line)
            if doc.get("state") != State.RUNNING:
                code = LSBStatusExitStatuses.UNKNOWN if not doc.get("available", True) or doc.get("is_stale") \
                    else LSBStatusExitStatuses.NOT_RUNNING
                worst = max(worst, code)
        if worst:
            self.ctl.exitstatus = worst

    def _getter(self, program: str) -> Any:
        return lambda: self._sidecar().getState(program)

    def _wait(self, args: argparse.Namespace) -> None:
        program = self._one(args)
        get = self._getter(program)
        doc = control.wait_for_state(get, args.state, args.timeout)
        for line in status_lines(doc, program):
            self.ctl.output(line)

    def _start(self, args: argparse.Namespace, program: str = "") -> None:
        program = program or self._one(args)
        get = self._getter(program)
        first = get()
        requested = float(first.get("server_time", 0))
        name = process_name(program, first.get("group"))
        tolerate(lambda: self._supervisor().startProcess(name, False), (Faults.ALREADY_STARTED,))
        doc = control.wait_started(get, requested, args.timeout)
        self.ctl.output(f"{program}: running (pid {doc.get('pid')}, port {doc.get('port')})")

    def _stop(self, args: argparse.Namespace, program: str = "") -> None:
        program = program or self._one(args)
        get = self._getter(program)
        first = get()
        name = process_name(program, first.get("group"))
        tell_stop(self.ctl.get_server_proxy(), program)  # the listener must not start it again (a retry)
        tolerate(lambda: self._supervisor().stopProcess(name, False), (Faults.NOT_RUNNING,))
        timeout = args.timeout if args.timeout is not None else stop_window(self.ctl.get_server_proxy(), name)
        control.wait_stopped(get, timeout)
        self.ctl.output(stopped_line(program, get()))

    def _restart(self, args: argparse.Namespace) -> None:
        """Each program named, one after the other; ``all``: every sidecar configured (a fleet's
        ``[fcgi-program]``s have no ``[group:]`` to name them together)."""
        if args.programs == [ALL]:
            programs = self._programs(argparse.Namespace(programs=[]))
        else:
            programs = list(args.programs) if len(args.programs) > 1 else [self._one(args)]
        for program in programs:
            self._restart_one(args, program)

    def _restart_one(self, args: argparse.Namespace, program: str) -> None:
        """In place when the launcher can (``shell.processes.inplace``; read on this host), else stop then start."""
        from sidecar_plugin.shell.processes import inplace

        get = self._getter(program)
        first = get()
        pid, name = first.get("pid"), process_name(program, first.get("group"))
        if first.get("state") != State.RUNNING or not pid or not inplace.replaceable(int(pid)):
            self._stop(args, program)
            self._start(args, program)
            self.ctl.output(f"{program}: stopped and started by supervisord: requests waited for the start")
            return
        old = inplace.workers(int(pid))
        timeout = args.timeout if args.timeout is not None else \
            control.DEFAULT_WAIT + stop_window(self.ctl.get_server_proxy(), name)
        self._supervisor().signalProcess(name, "USR2")
        inplace.wait_replaced(int(pid), old, lambda: get().get("state") == State.RUNNING, timeout)
        self.ctl.output(f"{program}: running (pid {pid}, port {first.get('port')}); in place: the previous workers "
                        "served until the new ones did")

    def help_sidecar(self) -> None:
        self.ctl.output(USAGE)


def make_ctlplugin(controller: Any, **config: Any) -> SidecarControllerPlugin:
    """supervisorctl's plugin factory."""
    return SidecarControllerPlugin(controller, **config)
