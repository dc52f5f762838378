"""Where each sidecar of a render goes: its program name, port, folder and files.

Pure: the profiles, the operator's common options and the ports of the
previous render in, a ``Plan`` out. One profile keeps the contract's layout:
``DIR/litellm.yaml``, a program named by ``--program`` and its own listener.
Several profiles become a fleet: each profile ``NAME`` is the program
``agentroute-NAME`` with its files in ``DIR/agentroute-NAME/`` (config, state,
log), all in one supervisord ``[group:agentroute]``, watched by one listener
``agentroute-health``.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from sidecar_plugin.core.profile import Profile, ProfileError
from sidecar_plugin.core.render import PROGRAM_RE, Plan, RenderError, RenderOptions
from sidecar_plugin.names import DEFAULT_PORT, GROUP, LISTENER_SUFFIX, fleet_paths


def plan(profiles: Sequence[Profile], common: RenderOptions, grouped: bool, cli_port: Optional[int],
         previous: Mapping[str, int] = {}) -> Plan:
    """Return the plan of one render; ``previous`` maps program -> the port it had last time."""
    if grouped:
        sidecars = _fleet(profiles, common, previous)
        result = Plan(common.out_dir, tuple(sidecars), common, GROUP)
    else:
        one = replace(common, port=optional_port(profiles[0], cli_port))
        result = Plan(common.out_dir, ((profiles[0], one),), common, None)
    for opts in result.options:
        check_options(opts)
    return result


def assign_ports(profiles: Sequence[Profile], base: int, previous: Mapping[str, int] = {}) -> Dict[str, int]:
    """Give each profile its own port: its ``port``, else the one it had, else the next free from ``base``.

    "Free" means not claimed by another profile of the fleet, not "nobody
    listens there now": the running sidecars hold their own ports, and the
    same inputs must render the same files. A sidecar keeps the port of the
    previous render (``previous``: program name -> port), so adding a profile
    never moves the port of one the gateway already uses.
    """
    ports: Dict[str, int] = {}
    owner: Dict[int, str] = {}
    for p in profiles:
        if p.port is not None:
            if p.port in owner:
                raise ProfileError(f"{p.source}: port: {p.port} is also the port of profile {owner[p.port]!r}")
            owner[p.port] = p.name
            ports[p.name] = p.port
    for p in profiles:
        kept = previous.get(f"{GROUP}-{p.name}")
        if p.name not in ports and kept is not None and kept not in owner:
            owner[kept] = p.name
            ports[p.name] = kept
    nxt = base
    for p in profiles:
        if p.name in ports:
            continue
        while nxt in owner:
            nxt += 1
        if nxt > 65535:
            raise RenderError(f"--port: no port left from {base} for profile {p.name!r}")
        owner[nxt] = p.name
        ports[p.name] = nxt
    return ports


def _fleet(profiles: Sequence[Profile], base: RenderOptions,
           previous: Mapping[str, int]) -> List[Tuple[Profile, RenderOptions]]:
    seen: Dict[str, str] = {}
    for p in profiles:
        if p.name in seen:
            raise ProfileError(f"{p.source}: name: {p.name!r} is also the name of {seen[p.name]}")
        seen[p.name] = p.source
        if GROUP + "-" + p.name == GROUP + LISTENER_SUFFIX:
            raise ProfileError(f"{p.source}: name: {p.name!r} is taken by the fleet's listener ({GROUP}{LISTENER_SUFFIX})")
    ports = assign_ports(profiles, base.port, previous)
    result = []
    for p in sorted(profiles, key=lambda q: q.name):
        program = f"{GROUP}-{p.name}"
        paths = fleet_paths(base.out_dir, program)
        result.append((p, replace(base, out_dir=paths["dir"], program=program, group=GROUP,
                                  port=ports[p.name], state_file=paths["state-file"], log_file=paths["log-file"])))
    return result


def check_options(opts: RenderOptions) -> None:
    """Refuse options supervisord or LiteLLM would choke on, with one line."""
    if not PROGRAM_RE.match(opts.program):
        raise RenderError(f"--program: must match [A-Za-z0-9][A-Za-z0-9._-]* (got {opts.program!r})")
    if not 1 <= opts.port <= 65535:
        raise RenderError(f"--port: must be from 1 to 65535 (got {opts.port})")
    if opts.workers < 1:
        raise RenderError(f"--workers: must be at least 1 (got {opts.workers})")
    if not math.isfinite(opts.health_timeout) or opts.health_timeout <= 0:
        raise RenderError(f"--health-timeout: must be a finite number of seconds above 0 (got {opts.health_timeout:g})")
    for flag, value in (("--retry-delay", opts.retry_delay), ("--retry-max-delay", opts.retry_max_delay),
                        ("--retry-reset-after", opts.retry_reset_after)):
        if not math.isfinite(value) or value <= 0:
            raise RenderError(f"{flag}: must be a finite number of seconds above 0 (got {value:g})")
    if opts.retry_max_delay < opts.retry_delay:
        raise RenderError(f"--retry-max-delay: must be at least --retry-delay ({opts.retry_max_delay:g} < "
                          f"{opts.retry_delay:g})")
    if opts.stop_timeout < 1:
        raise RenderError(f"--stop-timeout: must be at least 1 second (got {opts.stop_timeout})")
    if not opts.host or any(ch.isspace() for ch in opts.host):
        raise RenderError(f"--host: must be an address to bind (got {opts.host!r})")


def optional_port(profile: Profile, cli_port: Optional[int]) -> int:
    """Return the sidecar port: the CLI wins, then the profile, then 4000."""
    if cli_port is not None:
        return cli_port
    return profile.port if profile.port is not None else DEFAULT_PORT
