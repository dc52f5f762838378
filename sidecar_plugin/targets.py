"""What one listener watches: its command line, turned into one set of options per sidecar.

The listener's command line (rendered into ``sidecar.conf``) is the one place
that says which programs it watches and where their state files are. The
listener itself and every client that finds a state file through supervisord
(``discovery``) read it here, through the same parser, so they cannot drift.
"""

from __future__ import annotations

import argparse
import os
from typing import List, Optional, Sequence

from sidecar_plugin.fleet import fleet_paths
from sidecar_plugin.listener import ListenerOptions


class TargetError(ValueError):
    """The listener's options name no sidecar, or name it badly; one line for the log."""


def listen_targets(a: argparse.Namespace) -> List[ListenerOptions]:
    """Return the sidecars of a parsed ``listen`` command: one (``--program``) or a fleet (``--sidecar``)."""
    common = dict(host=a.host, health_timeout=a.health_timeout, probe_interval=a.probe_interval,
                  probe_timeout=a.probe_timeout, starting_probe_interval=a.starting_probe_interval,
                  failure_threshold=a.failure_threshold)
    if a.sidecar:
        if a.program or not a.root:
            raise TargetError("--sidecar PROGRAM=PORT goes with --root (and without --program)")
        targets = []
        for spec in a.sidecar:
            program, sep, port = spec.partition("=")
            if not sep or not program or not port.isdigit():
                raise TargetError(f"--sidecar {spec!r}: expected PROGRAM=PORT")
            paths = fleet_paths(os.path.abspath(a.root), program, getattr(a, "state_subdir", "") or "")
            targets.append(ListenerOptions(program=program, group=a.group, port=int(port),
                                           state_file=paths["state-file"], log_file=paths["log-file"],
                                           config_path=paths["config"], **common))
        return targets
    missing = [flag for flag, v in (("--program", a.program), ("--port", a.port), ("--state-file", a.state_file),
                                    ("--log-file", a.log_file)) if v is None]
    if missing:
        raise TargetError(f"listen needs {', '.join(missing)} (or --root and --sidecar for a fleet)")
    return [ListenerOptions(program=a.program, group=a.group, port=a.port, state_file=os.path.abspath(a.state_file),
                            log_file=a.log_file, config_path=a.config, **common)]


def parse_listen_command(argv: Sequence[str]) -> Optional[List[ListenerOptions]]:
    """Return the sidecars of a listener command line (``... listen --opt ...``), else None."""
    from sidecar_plugin.cli import CliError, build_parser

    if "listen" not in argv:
        return None
    rest = list(argv[list(argv).index("listen"):])
    try:
        return listen_targets(build_parser().parse_args(rest))
    except (CliError, TargetError, SystemExit):
        return None
