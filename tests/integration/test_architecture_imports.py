"""What the gateway's client and supervisord's plugin load: a fresh interpreter imports them, nothing heavier.

A process of its own, as each of them runs (tests/unit/test_architecture.py reads the sources).
"""

import subprocess
import sys


def test_client_and_rpc_load_neither_cli_listener_render_apply_requests_nor_yaml():
    code = ("import sys, sidecar_plugin.client, sidecar_plugin.rpc\n"
            "heavy = ['sidecar_plugin.cli', 'sidecar_plugin.commands', 'sidecar_plugin.shell.listener.engine',\n"
            "         'sidecar_plugin.core.render.plan_files', 'sidecar_plugin.core.render.terms', 'sidecar_plugin.core.render.sections',\n"
            "         'sidecar_plugin.shell.render.apply', 'requests', 'yaml', 'argparse']\n"
            "print(' '.join(m for m in heavy if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""
