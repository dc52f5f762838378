"""A supervisord that accepts and never answers: a client's call ends with an error, not never.

A listening socket (tests/unit/test_timeouts.py refuses bad timeouts without one).
"""

import pytest


def test_a_wedged_supervisord_does_not_hang_a_client(tmp_path):
    """A socket that accepts and never answers: the call ends with an error, not never."""
    import socket

    from sidecar_plugin.shell.supervisord.supervisor import rpc_proxy

    path = str(tmp_path / "wedged.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    try:
        with pytest.raises(OSError):
            rpc_proxy("unix://" + path, env={}, timeout=0.5).supervisor.getState()
    finally:
        server.close()
