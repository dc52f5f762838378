"""The names every layer shares: files, programs, states and exit codes.

One small module with no imports of its own, so the pure core, the shells and
the faces can all agree on a name without importing each other (render and
the listener both need the marker; the CLI and the listener both need the
"refused" exit code; the client and the listener both need ``State``).
"""

from __future__ import annotations

import enum
from typing import Optional

# ---- programs and groups -------------------------------------------------------

DEFAULT_PROGRAM = "agentroute-sidecar"
GROUP = "agentroute"  # a fleet's supervisord group; each profile NAME is the program agentroute-NAME
LISTENER_SUFFIX = "-health"  # the listener of program P (or of fleet G) is P-health (G-health)
DEFAULT_PORT = 4000
DEFAULT_HOST = "127.0.0.1"
# Two uvicorn workers by default: a change of litellm.yaml is then applied by
# replacing them one at a time (SIGHUP) while the other serves, with no request
# refused or cut; one worker has nothing to serve while it is replaced. The cost
# is memory: about 400 MB PSS for the launcher and two workers forked from it
# (920 MB RSS when LiteLLM's CLI runs them: a fleet, an IPv6 host).
DEFAULT_WORKERS = 2
# The drain window: in-flight requests (streams last minutes) get this long to
# finish on stop, restart or a retired worker; LiteLLM's GRACEFUL_SHUTDOWN_TIMEOUT
# is rendered to it, supervisord's stopwaitsecs a margin above it.
DEFAULT_STOP_TIMEOUT = 60
# The outer bound of a start, in seconds: a start is judged by its progress (core.listener.health), and this
# stays far above LiteLLM's start on a busy host (7-16 s idle, a minute or more beside other work).
DEFAULT_HEALTH_TIMEOUT = 300.0
STOP_MARGIN = 5
# uvicorn's --timeout_worker_healthcheck: a new worker must be ready within it or
# the rolling replacement is aborted (LiteLLM takes 7 to 14 s, more under load;
# uvicorn's 5 s default aborts every reload).
WORKER_HEALTHCHECK = 60


def process_name(program: str, group: Optional[str] = None) -> str:
    """Return the name supervisord's XML-RPC knows a program by: ``group:program``.

    A program outside a ``[group:]`` is its own group; a fleet's share ``agentroute``.
    """
    return f"{group or program}:{program}"


# ---- files -------------------------------------------------------------------

LITELLM_YAML = "litellm.yaml"
MASTER_KEY = "master.key"
SIDECAR_CONF = "sidecar.conf"
RECORD_NAME = "sidecar.json"  # what a render leaves for the next render and apply (ports, groups)
# the launcher's flags and interpreter, read at each (re-)exec: apply changes them without a restart
LAUNCH_NAME = "launch.json"
PROFILE_PORT = "profile_port"  # the record's key: the profile's port when a kept --port was given
STATE_NAME = "state.json"
LOG_NAME = "litellm.log"
LISTENER_LOG_NAME = "listener.log"
HISTORY_NAME = "history.jsonl"
PROFILE_EXTENSIONS = (".yaml", ".yml", ".json")
# A comment line of a --binary that serves supervisord's listening socket on fd 0 itself (not LiteLLM's entry
# point: the tests' stand-in, a site's own server): ``# sidecar-plugin: fd 0``.
FD0_MARKER = "sidecar-plugin: fd 0"

# ---- the process tree marker ---------------------------------------------------

MARKER_ENV = "SIDECAR_PLUGIN_TREE"


def marker_value(program: str, config_path: str) -> str:
    """Return the value that marks every process of one rendered sidecar's tree.

    It names the config too, so two supervisords running a program of the same
    name (a test beside a demo) never mistake each other's processes.
    """
    return f"{program}@{config_path}"


# ---- who holds the listening socket ----------------------------------------------

# "supervisord": the sidecar is an ``[fcgi-program]`` whose listening socket supervisord
# creates and the ``sidecar`` rpcinterface holds open (no LiteLLM exit closes the port);
# "sidecar": LiteLLM binds the port itself (a fleet's ``[group:]``, an IPv6 host, or asked for).
OWNER_SUPERVISORD = "supervisord"
OWNER_SIDECAR = "sidecar"
PORT_OWNERS = (OWNER_SUPERVISORD, OWNER_SIDECAR)
HEALTH_SOCKET_ENV = "SIDECAR_HEALTH_SOCKET"


def health_socket_name(program: str, config_path: str) -> str:
    """Return the prefix of a tree's private health socket: ``@<prefix>/<pid of the tree's root>``.

    Abstract (no file, no permission, no path-length limit), one per rendered
    sidecar; the pid makes it one per tree, so an orphan of an older tree can
    never answer for the new one.
    """
    import hashlib

    digest = hashlib.sha256(marker_value(program, config_path).encode("utf-8", "surrogateescape")).hexdigest()
    return f"sidecar-plugin/{digest[:16]}"


# ---- the lifecycle ------------------------------------------------------------


class State(str, enum.Enum):
    """The sidecar's lifecycle state; compare against names, not strings."""

    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    CRASHED = "crashed"

    def __str__(self) -> str:
        return self.value


SCHEMA = 1
STALE_AFTER = 15.0  # seconds without a heartbeat after which nothing may report running
HEARTBEAT_EVERY = 2.0  # the listener refreshes heartbeat_at at least this often (contract: <= 5 s)

# supervisord's process states, as the listener and clients group them
LIVE_STATES = ("STARTING", "RUNNING")  # a process exists and is meant to run
STOPPING_STATES = ("STOPPING", "STOPPED")  # an operator (or apply) stops it on purpose
GAVE_UP_STATES = ("FATAL", "STOPPED")  # nothing brings it back by itself

# ---- exit codes ----------------------------------------------------------------

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2  # bad input: one line, nothing written
EXIT_NOT_RUNNING = 3  # status: not running
EXIT_NO_BINARY = 3  # render/start: LiteLLM not found
EXIT_UNKNOWN = 4  # status: missing, corrupt or stale state file
# apply: the new configuration is in place, but a sidecar it manages is not running
# (crashed, or still starting when apply's time ran out); 1 stays "the change failed".
EXIT_DOWN = 5
# The listener exits with this when it must not run (another listener owns the
# state file): an expected exit, so supervisord does not restart it in a loop.
EXIT_REFUSED = 78


RUN_DIR = "run"  # under --user: the folder the sidecar's user owns, for its state and history
# LiteLLM's traffic metrics (issue 33): prometheus_client's multiprocess folder, one per sidecar, in RUN_DIR
# (the sidecar's user may write there), named to each tree in this variable of the program's environment
TRAFFIC_METRICS_DIR = "prometheus"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def fleet_paths(root: str, program: str, state_subdir: str = "") -> "dict[str, str]":
    """Return the folder, config, state file and log file of a fleet sidecar.

    Render writes them here and the listener finds them here from ``--root``
    and the program name alone (plus ``--state-subdir``: under ``--user`` the
    state lives in ``run/``, the one folder the user owns), so the two cannot
    disagree.
    """
    import os

    folder = os.path.join(root, program)
    return {"dir": folder, "config": os.path.join(folder, LITELLM_YAML),
            "state-file": os.path.join(folder, state_subdir, STATE_NAME) if state_subdir
            else os.path.join(folder, STATE_NAME),
            "log-file": os.path.join(folder, LOG_NAME)}
