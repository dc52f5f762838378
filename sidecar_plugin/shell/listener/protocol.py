"""supervisord's event-listener protocol, and the listener process's main loop.

``protocol_loop`` reads each event and acknowledges it, whatever it holds (a
short payload ends the loop cleanly), because a listener that stops
acknowledging makes supervisord buffer and then drop events. ``run`` hands
every event to each sidecar's ``Listener``.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import IO, Any, Callable, List, Optional

from supervisor import childutils

from sidecar_plugin.core.listener.events import parse_event, parse_headers
from sidecar_plugin.core.options.listen_args import ListenerOptions
from sidecar_plugin.shell.listener.engine import Listener
from sidecar_plugin.shell.listener.metrics import MetricsFile

log = logging.getLogger("sidecar_plugin.listener")


def protocol_loop(stdin: IO[bytes], stdout: IO[str], handle: Callable[[str, str], None]) -> None:
    """Speak supervisord's listener protocol until stdin closes.

    Every event is acknowledged, whatever happens to it: a listener that stops
    acknowledging makes supervisord buffer and then drop events.
    """
    while True:
        childutils.listener.ready(stdout)
        line = stdin.readline()
        if not line:
            return
        text = line.decode("utf-8", "replace")
        headers = parse_headers(text)
        try:
            length = max(0, int(headers.get("len", "0")))
        except ValueError:
            length = 0
        payload = stdin.read(length) if length else b""
        if length and len(payload) < length:
            return
        try:
            handle(text, payload.decode("utf-8", "replace"))
        except Exception:  # never let one event take the listener down
            log.exception("could not handle event %s", headers.get("eventname", "?"))
        childutils.listener.ok(stdout)


def run(targets: List[ListenerOptions], stdin: IO[bytes], stdout: IO[str],
        rpc_factory: Optional[Callable[[], Any]] = None, metrics_file: Optional[str] = None) -> int:
    """Watch every sidecar of ``targets`` until supervisord closes our stdin.

    One protocol loop feeds all of them: each engine keeps only its own
    program's events, so several sidecars cost one listener process.
    """
    socket.setdefaulttimeout(10.0)  # XML-RPC to a wedged supervisord must not hang forever
    factory = rpc_factory or (lambda: childutils.getRPCInterface(os.environ))
    metrics = MetricsFile(metrics_file) if metrics_file else None
    listeners = [Listener(opts, factory, metrics=metrics) for opts in targets]
    for listener in listeners:
        listener.start_threads()

    def handle(header_line: str, payload: str) -> None:
        name, body = parse_event(parse_headers(header_line), payload)
        for listener in listeners:
            listener.on_event(name, body)

    protocol_loop(stdin, stdout, handle)
    for listener in listeners:
        listener.stopped.set()
    log.info("stdin closed: supervisord is gone or stopping us")
    return 0
