"""The listener never gives up on its state folder: it creates it, or waits for it, and says so."""

import logging
import os
import threading

from inprocess import poll
from sidecar_plugin.shell.files.statefile import own_state_file


class _Log(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def _logger():
    log = logging.getLogger("test.listener.folder")
    log.handlers = []
    handler = _Log()
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    return log, handler


def test_a_missing_folder_is_created_and_said(tmp_path):
    log, seen = _logger()
    state = tmp_path / "run" / "agentroute" / "state.json"
    assert own_state_file(str(state), log) is True
    assert state.parent.is_dir()
    assert (tmp_path / "run" / "agentroute" / "state.json.lock").exists()
    assert any("did not exist: created it" in line for line in seen.lines)


def test_a_folder_that_cannot_be_created_yet_is_waited_for(tmp_path, monkeypatch):
    log, seen = _logger()
    folder = tmp_path / "run"
    state = folder / "state.json"
    real_makedirs = os.makedirs

    def refused(path, *a, **kw):
        if os.path.abspath(path) == str(folder):
            raise PermissionError(13, "Permission denied")
        return real_makedirs(path, *a, **kw)

    monkeypatch.setattr(os, "makedirs", refused)
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("locked", own_state_file(str(state), log, 0.05)),
                         daemon=True)
    t.start()
    poll(lambda: any("waiting for it" in line for line in seen.lines), 10, what="the waiting line")
    assert t.is_alive()  # it neither exits nor gives up
    real_makedirs(str(folder))  # someone (systemd-tmpfiles, say) makes it
    t.join(10)
    assert result == {"locked": True}
    assert any("usable now" in line for line in seen.lines)
