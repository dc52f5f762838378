"""Where each sidecar of a render goes: its program name, port, folder and files.

Pure: the profiles, the operator's common options and the ports of the
previous render in, a ``Plan`` out. One profile keeps the contract's layout:
``DIR/litellm.yaml``, a program named by ``--program`` and its own listener.
Several profiles become a fleet: each profile ``NAME`` is the program
``agentroute-NAME`` (``core.render.naming``: ``my work`` is ``agentroute-my-work``)
with its files in ``DIR/agentroute-NAME/`` (config, state, log), watched by one listener ``agentroute-health``.
Where supervisord holds the ports each is an ``[fcgi-program]``, its own supervisord group (a ``[group:]``
lists only ``[program:]`` sections: supervisor's ``options.process_groups_from_parser``); where LiteLLM binds
them (an IPv6 ``--host``, a ``--binary`` wrapper) they form one ``[group:agentroute]`` of ``[program]``s.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import replace
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from sidecar_plugin.core.options.table import OPTIONS, out_of_bounds
from sidecar_plugin.core.render.naming import fleet_programs, program_name
from sidecar_plugin.core.profiles.agentroute import Profile, ProfileError
from sidecar_plugin.core.render.plan_files import Plan, render_sidecar_conf
from sidecar_plugin.core.render.terms import PROGRAM_RE, RenderError, RenderOptions
from sidecar_plugin.core.render.sections import check_representable
from sidecar_plugin.names import DEFAULT_PORT, GROUP, LISTENER_SUFFIX, RUN_DIR, fleet_paths


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
    render_sidecar_conf(result)  # raises RenderError for anything the include could not hold exactly
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
        kept = previous.get(program_name(p.name, GROUP))
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
    programs = fleet_programs(profiles, GROUP, reserved={GROUP + LISTENER_SUFFIX})
    ports = assign_ports(profiles, base.port, previous)
    result = []
    for p in sorted(profiles, key=lambda q: q.name):
        program = programs[p.name]
        paths = fleet_paths(base.out_dir, program, RUN_DIR if base.user else "")
        one = replace(base, out_dir=paths["dir"], program=program, port=ports[p.name],
                      state_file=paths["state-file"], log_file=paths["log-file"])
        result.append((p, one if one.supervisord_socket else replace(one, group=GROUP)))
    return result


_HOSTNAME = re.compile(r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\Z")  # noqa: E501


def check_options(opts: RenderOptions) -> None:
    """Refuse options supervisord or LiteLLM would choke on, with one line.

    Every value is checked against its declared bounds (``core.options.table``):
    a value kept in a record was never parsed.
    """
    if not PROGRAM_RE.match(opts.program):
        raise RenderError(f"--program: must match [A-Za-z0-9][A-Za-z0-9._-]* (got {opts.program!r})")
    why = out_of_bounds({o.attr: getattr(opts, o.attr) for o in OPTIONS if hasattr(opts, o.attr)})
    if why:
        raise RenderError(why)
    check_recycling(opts)
    if opts.retry_max_delay < opts.retry_delay:
        raise RenderError(f"--retry-max-delay: must be at least --retry-delay ({opts.retry_max_delay:g} < "
                          f"{opts.retry_delay:g})")
    if not _is_host(opts.host):
        raise RenderError(f"--host: must be an IP address or a host name to bind (got {opts.host[:80]!r})")
    check_representable(opts)


def _is_host(host: str) -> bool:
    """An IPv4 or IPv6 literal, or a host name of letters, digits, hyphens and dots."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:  # digits and dots that are no IPv4 address are no host name either
        return bool(_HOSTNAME.match(host)) and not re.fullmatch(r"[0-9.]+", host)


def optional_port(profile: Profile, cli_port: Optional[int]) -> int:
    """Return the sidecar port: the CLI wins, then the profile, then 4000."""
    if cli_port is not None:
        return cli_port
    return profile.port if profile.port is not None else DEFAULT_PORT


def check_recycling(opts: RenderOptions) -> None:
    """Refuse a max-requests jitter or a recycling that cannot be what the files say, with one line."""
    if opts.max_requests_jitter is not None:
        if not opts.max_requests:
            raise RenderError("--max-requests-jitter: only with --max-requests")
        if not 0 <= opts.max_requests_jitter <= opts.max_requests:
            raise RenderError(f"--max-requests-jitter: must be from 0 to --max-requests ({opts.max_requests}) "
                              f"(got {opts.max_requests_jitter})")
    if opts.max_requests and opts.workers < 2 and not opts.supervisord_socket:
        raise RenderError("--max-requests: with --workers 1 where LiteLLM binds the port (an IPv6 "
                          "--host), each recycle would close the port and refuse connections; give --workers 2")
