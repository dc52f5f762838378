"""Several profiles: program names, sticky ports, one group and one listener, bad fleets refused."""

import json
import os

import pytest

from sidecar_plugin.core.render.layout import assign_ports
from sidecar_plugin.shell.render.build import expand_profiles
from sidecar_plugin.profile import Profile, ProfileError


def prof(name, port=None):
    return Profile(name=name, models={"fast": "x/y"}, port=port, source=f"{name}.yaml")


def test_ports_explicit_then_kept_then_next_free():
    assert assign_ports([prof("a"), prof("b", 4000), prof("c")], 4000) == {"b": 4000, "a": 4001, "c": 4002}
    # a sidecar keeps the port it had, so adding "a" (sorted first) moves nobody
    assert assign_ports([prof("a"), prof("z")], 5000, {"agentroute-z": 5000}) == {"z": 5000, "a": 5001}
    # an explicit port wins over a kept one
    assert assign_ports([prof("a", 5000), prof("z")], 5000, {"agentroute-z": 5000}) == {"a": 5000, "z": 5001}


def test_two_profiles_claiming_one_port_are_refused():
    with pytest.raises(ProfileError, match=r"b\.yaml: port: 4000 is also the port of profile 'a'"):
        assign_ports([prof("a", 4000), prof("b", 4000)], 4000)


def test_a_folder_makes_a_fleet_and_lists_only_profiles(tmp_path):
    (tmp_path / "b.yaml").write_text("")
    (tmp_path / "a.json").write_text("")
    (tmp_path / "notes.txt").write_text("")
    (tmp_path / ".hidden.yaml").write_text("")
    files, grouped = expand_profiles([str(tmp_path)])
    assert grouped
    assert [os.path.basename(f) for f in files] == ["a.json", "b.yaml"]
    assert expand_profiles([str(tmp_path / "a.json")]) == ([str(tmp_path / "a.json")], False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ProfileError, match="no profile in this folder"):
        expand_profiles([str(tmp_path / "empty")])


def test_listener_log_lines_are_redacted_json():
    import io
    import logging

    from sidecar_plugin.shell.listener import logs
    from sidecar_plugin.shell.listener.redact import Redactor

    stream = io.StringIO()
    logs.setup(stream, lambda: Redactor(["s3cretvalue"]))
    try:
        logging.getLogger("x").warning("key %s and %s", "s3cretvalue", "sk-abcdefghijklmnop")
        try:
            raise RuntimeError("boom s3cretvalue")
        except RuntimeError:
            logging.getLogger("x").exception("failed")
    finally:
        logging.getLogger().handlers[:] = []
    first, second = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert first["level"] == "warning"
    assert "s3cretvalue" not in first["msg"]
    assert "sk-abc" not in first["msg"]
    assert "RuntimeError" in second["exc"]
    assert "s3cretvalue" not in second["exc"]
