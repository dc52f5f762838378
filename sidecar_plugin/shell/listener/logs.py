"""The listener's own log: one JSON object a line, with no secret in it.

Structured so that log shippers and ``jq`` can filter by program and level
without regular expressions; redacted at the handler, so no code path (a
library's warning, an exception's text) can put a key into the log.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import IO, Callable

from sidecar_plugin.shell.listener.redact import Redactor


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "program", "msg", "pid"}`` (+ ``exc`` with a traceback) per line."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "program": getattr(record, "program", None),
            "msg": record.getMessage(),
            "pid": os.getpid(),
        }
        if record.exc_text or record.exc_info:
            doc["exc"] = record.exc_text or (self.formatException(record.exc_info) if record.exc_info else None)
        return json.dumps({k: v for k, v in doc.items() if v is not None}, sort_keys=False)


class RedactingFilter(logging.Filter):
    """Replace secrets in every record before it is formatted."""

    def __init__(self, redactor: Callable[[], Redactor]) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        redact = self.redactor()
        record.msg = redact(record.getMessage())
        record.args = ()
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def setup(stream: IO[str], redactor: Callable[[], Redactor], level: int = logging.INFO) -> None:
    """Send every log record, redacted and as JSON, to ``stream`` (the listener's stderr)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter(redactor))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
