"""supervisord's event headers and payloads, parsed into the state machine's inputs.

Pure and tolerant: a token without a colon is skipped and an unknown shape
gives empty headers, never an exception, because every event must still be
acknowledged.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

from sidecar_plugin.core.listener.inputs import OperatorStop, ProcEvent

# The REMOTE_COMMUNICATION event a client sends (``supervisor.sendRemoteCommEvent``) to tell the
# listener of PROGRAM that an operator stops it on purpose: type ``sidecar-stop:PROGRAM``.
STOP_COMMAND = "sidecar-stop"


def stop_command(program: str) -> str:
    """Return the event type that tells ``program``'s listener of an operator's stop."""
    return f"{STOP_COMMAND}:{program}"


def parse_headers(line: str) -> Dict[str, str]:
    """Parse ``key:value key:value``; tokens without a colon are skipped, never fatal."""
    headers: Dict[str, str] = {}
    for token in line.split():
        key, sep, value = token.partition(":")
        if sep:
            headers[key] = value
    return headers


def parse_event(headers: Dict[str, str], payload: str) -> Tuple[str, Dict[str, str]]:
    """Return (event name, payload headers) of one event; unknown shapes give empty headers."""
    first = payload.split("\n", 1)[0] if payload else ""
    return headers.get("eventname", ""), parse_headers(first)


def event_input(name: str, body: Dict[str, str], program: str, group: str,
                at: Optional[float] = None) -> Optional[ProcEvent]:
    """Turn a PROCESS_STATE event of our program into a machine input, else None."""
    if not name.startswith("PROCESS_STATE_"):
        return None
    if body.get("processname") != program or body.get("groupname", group) != group:
        return None
    pid = body.get("pid")
    expected = body.get("expected")
    return ProcEvent(
        state=name[len("PROCESS_STATE_"):],
        pid=int(pid) if pid and pid.isdigit() else None,
        expected=None if expected is None else expected == "1",
        from_state=body.get("from_state"),
        at=at,
    )


def command_input(name: str, body: Dict[str, str], program: str,
                  at: Optional[float] = None) -> Optional[OperatorStop]:
    """Turn a REMOTE_COMMUNICATION event meant for ``program``'s listener into a machine input, else None."""
    kind = body.get("type", "")
    if kind.startswith("b'") and kind.endswith("'"):
        kind = kind[2:-1]  # supervisord 4 on Python 3 formats the type it was sent as bytes: b'...'
    if name != "REMOTE_COMMUNICATION" or kind != stop_command(program):
        return None
    return OperatorStop(at=at)
