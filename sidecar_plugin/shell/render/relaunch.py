"""Apply what needs a new tree without a wait: the launcher re-executes itself in place on what ``launch.json`` says.

The worker count, ``--binary`` naming another install, the launcher's own
flags (``--max-requests``, ``--memory-budget``) and a LiteLLM upgraded in
place all need a new LiteLLM tree. supervisord's command for the program
names only ``launch.json`` (``core.render.sections.program_command``), so its
``update`` sees no change and stops nothing: apply writes the file, then asks
for the restart in place that ``sidecar-plugin restart`` asks for (SIGUSR2,
``shell.processes.inplace``). The launcher executes the interpreter the file
names, the same pid, the socket and its workers handed over; the old workers
serve until every new one does. What cannot be done so (one worker, a tree
that is not running, an interpreter that cannot be executed, a change that
edits the include itself) keeps supervisord's stop-then-start, and apply says so.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Optional, Sequence

import psutil

from sidecar_plugin.core.render.options import RenderOptions
from sidecar_plugin.core.render.sections import sidecar_command
from sidecar_plugin.errors import SidecarError
from sidecar_plugin.names import STOP_MARGIN, State
from sidecar_plugin.shell.files.rendered import file_version
from sidecar_plugin.shell.files.statefile import state_dict
from sidecar_plugin.shell.processes import inplace
from sidecar_plugin.shell.supervisord import control
from sidecar_plugin.shell.supervisord.supervisor import live_processes


def stale(sidecars: Sequence[RenderOptions]) -> Dict[str, str]:
    """Map program -> why its running launcher serves another argv than ``launch.json`` says.

    A render followed by ``supervisorctl update`` leaves it so: the include is
    the same, so supervisord restarts nothing, and the record already says the
    new argv, so only the live process tells.
    """
    out = {}
    for s in sidecars:
        doc = state_dict(s.state_file)
        if not s.launch_path or doc.get("state") != State.RUNNING or not isinstance(doc.get("pid"), int):
            continue
        argv = sidecar_command(s)
        try:
            live = psutil.Process(doc["pid"]).cmdline()
        except psutil.Error:
            continue
        if "--launch" in live and live != argv[:2] + ["--launch", s.launch_path] + argv[2:]:
            out[s.program] = "launcher's command"
    return out


class NotReplaced(SidecarError):
    """The new tree did not come up in place; ``program`` says whose (a rollback leaves a new LiteLLM alone)."""

    def __init__(self, message: str, program: str) -> None:
        super().__init__(message)
        self.program = program


def why_not(rpc: Any, s: RenderOptions) -> Optional[str]:
    """Why the sidecar's tree cannot be replaced in place now; None when it can."""
    if not s.launch_path:
        return "supervisord runs LiteLLM's command itself (no launcher)"
    if not inplace.supervising(sidecar_command(s)):
        return "it runs one worker (with --workers 2 or more, apply replaces the tree without a wait)"
    doc = state_dict(s.state_file)
    pid = doc.get("pid")
    if doc.get("state") != State.RUNNING or not isinstance(pid, int) \
            or live_processes(rpc).get(s.process_name) not in ("STARTING", "RUNNING"):
        return "it is not running"
    if not inplace.replaceable(pid):
        return "its live launcher runs one worker"
    if not os.access(s.launcher[0], os.X_OK):
        return f"{s.launcher[0]} cannot be executed"
    return None


def replace_in_place(rpc: Any, s: RenderOptions, why: str, timeout: float, config_changed: bool,
                     say: Callable[[str], None]) -> bool:
    """Replace the tree in place and wait until the new workers serve alone; False (said) when it cannot be."""
    reason = why_not(rpc, s)
    if reason is not None:
        say(f"{s.program}: cannot be replaced in place ({reason}): stopped and started by supervisord")
        return False
    pid = int(state_dict(s.state_file)["pid"])
    say(f"{s.program}: replacing its tree in place ({why}): the launcher executes itself again as "
        f"{os.path.basename(s.launch_path)} says (pid {pid} stays), the previous workers serving until "
        "the new ones do: no request waits")
    old = inplace.workers(pid)
    wanted = file_version(s.config_path)
    rpc.supervisor.signalProcess(s.process_name, "USR2")
    limit = timeout + s.stop_timeout + STOP_MARGIN  # the old workers drain their streams before they leave
    try:
        inplace.wait_replaced(pid, old, lambda: state_dict(s.state_file).get("state") == State.RUNNING, limit)
    except SidecarError as exc:
        raise NotReplaced(str(exc), s.program) from None
    if config_changed:  # the listener records the version the new workers read (born after the change)
        def step() -> Optional[bool]:
            return True if state_dict(s.state_file).get("config_version") == wanted else None

        control.poll(step, limit, lambda: NotReplaced(f"{s.program}: its new workers do not say they "
                                                      f"run the new {os.path.basename(s.config_path)}", s.program))
    return True
