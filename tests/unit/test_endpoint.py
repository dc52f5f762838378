"""How the gateway finds the sidecar: its base URL and the file holding the key, never the key itself."""

import os

import pytest
import yaml

from sidecar_plugin.core.state.endpoint import base_url
from sidecar_plugin.shell.files.keyfile import KeyFileCache, find_key_file


@pytest.mark.parametrize("host, port, url", [
    ("127.0.0.1", 4000, "http://127.0.0.1:4000"),
    ("0.0.0.0", 4001, "http://127.0.0.1:4001"),
    ("::", 4002, "http://[::1]:4002"),
    ("::1", 4003, "http://[::1]:4003"),
    ("10.0.0.5", 4004, "http://10.0.0.5:4004"),
    ("sidecar.internal", 4005, "http://sidecar.internal:4005"),
])
def test_base_url(host, port, url):
    assert base_url(host, port) == url


def write_config(folder, key):
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "litellm.yaml")
    with open(path, "w") as fh:
        yaml.safe_dump({"model_list": [], "general_settings": {"master_key": key}}, fh)
    return path


def test_key_file_is_master_key_when_it_holds_the_key_else_the_config(tmp_path):
    key = "sk-" + "k" * 10 + "0123456789abcdefghijklmnopqrstuv"
    config = write_config(str(tmp_path / "one"), key)
    assert find_key_file(config) == config  # provided in the environment: litellm.yaml holds it
    (tmp_path / "one" / "master.key").write_text(key + "\n")
    assert find_key_file(config) == str(tmp_path / "one" / "master.key")
    (tmp_path / "one" / "master.key").write_text("sk-an-older-generated-key-0123456789abcdef\n")
    assert find_key_file(config) == config  # a stale master.key is never named
    # a fleet: each sidecar's config in ROOT/PROGRAM/, one master.key in ROOT
    fleet_config = write_config(str(tmp_path / "root" / "agentroute-work"), key)
    (tmp_path / "root" / "master.key").write_text(key + "\n")
    assert find_key_file(fleet_config) == str(tmp_path / "root" / "master.key")
    assert find_key_file(str(tmp_path / "missing" / "litellm.yaml")) is None
    assert find_key_file("") is None


def test_key_file_cache_follows_changes(tmp_path):
    key = "0123456789abcdef" * 4
    config = write_config(str(tmp_path), key)
    cache = KeyFileCache()
    assert cache.lookup(config) == config
    (tmp_path / "master.key").write_text(key + "\n")
    assert cache.lookup(config) == str(tmp_path / "master.key")
    os.unlink(tmp_path / "master.key")
    assert cache.lookup(config) == config


# -- with a real supervisord and the stand-in LiteLLM --

