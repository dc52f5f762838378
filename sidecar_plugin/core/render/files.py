"""Turn profiles and options into LiteLLM's YAML and a supervisord include: file contents only.

Pure (inputs -> bytes), so determinism and the secret rules are unit-tested
in-process; ``shell.render.build`` gathers the inputs (environment, binary, previous
render) and ``shell.files.rendered`` writes the result. Deterministic output matters:
config diffs, ``apply`` and tests must be stable across renders.

There is one path: a single sidecar is a fleet of one. A ``Plan`` holds the
sidecars, the group they share (a fleet's ``[group:agentroute]``; one sidecar
is its own group) and the one listener that watches them all. This module
assembles a plan's files (the include, the ``sidecar.json`` record, the
secrets); the options and error live in ``core.render.options``, the
supervisord sections in ``core.render.sections``; each name is imported from the
module that defines it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

from sidecar_plugin.core.options.declared import PLAN, WATCH, copied
from sidecar_plugin.core.options.listen_args import ListenerOptions, listen_argv
from sidecar_plugin.core.render.litellm_yaml import render_litellm_yaml
from sidecar_plugin.core.profiles.profile import Profile, alias
from sidecar_plugin.core.render.options import RenderedFile, RenderOptions
from sidecar_plugin.core.render.sections import (
    comment, launch_doc, listener_section, plugin_section, program_section, sidecar_command,
)
from sidecar_plugin.names import (
    LISTENER_SUFFIX, MASTER_KEY, OWNER_SIDECAR, OWNER_SUPERVISORD, PROFILE_PORT, RECORD_NAME, RUN_DIR, SCHEMA,
    SIDECAR_CONF,
)

__all__ = ["Plan", "master_key_file", "render_files", "render_record", "render_sidecar_conf", "watch_options"]


def watch_options(opts: RenderOptions) -> ListenerOptions:
    """Return what the listener watches of one sidecar, as its command line will say it."""
    return ListenerOptions(program=opts.program, port=opts.port, state_file=opts.state_file,
                           log_file=opts.log_file, group=opts.group or None, config_path=opts.config_path,
                           **copied(opts, PLAN, also=WATCH),
                           port_owner=OWNER_SUPERVISORD if opts.supervisord_socket else OWNER_SIDECAR,
                           port_note=opts.not_held)


@dataclass(frozen=True)
class Plan:
    """The sidecars of one render, the group they share and the listener that watches them.

    ``group`` is the fleet's group (several profiles) or None (one sidecar,
    which is its own group); ``common`` holds what the sidecars share (the
    listener's command, host, timeouts, user, metrics file, listener log).
    """

    out_dir: str
    sidecars: Tuple[Tuple[Profile, RenderOptions], ...]
    common: RenderOptions
    group: Optional[str] = None

    @property
    def options(self) -> Tuple[RenderOptions, ...]:
        return tuple(o for _, o in self.sidecars)

    @property
    def listener(self) -> str:
        """The ``[eventlistener:]`` name: the fleet's group, else the program, plus ``-health``."""
        return (self.group or self.sidecars[0][1].program) + LISTENER_SUFFIX

    @property
    def groups(self) -> List[str]:
        """The supervisord groups this include defines (a program or listener alone is its own group)."""
        return sorted({o.group_name for o in self.options} | {self.listener})

    def listener_argv(self) -> List[str]:
        return listen_argv(self.common.listener_command, [watch_options(o) for o in self.options],
                           self.out_dir if self.group else None, self.common.metrics_file,
                           RUN_DIR if self.group and self.common.user else "")


def render_sidecar_conf(plan: Plan) -> bytes:
    """Return the supervisord include: the group (a fleet), each program, the one listener.

    One listener for all keeps the cost of watching flat as profiles are
    added; the group lets an operator act on every sidecar at once
    (``supervisorctl restart agentroute:*``).
    """
    sources = ", ".join(p.source for p, _ in plan.sidecars)
    if plan.group:
        about = "; " + "; ".join(f"{o.program}: port {o.port}" for o in plan.options) + "."
    else:
        profile = plan.sidecars[0][0]
        about = f"; Profile {profile.name!s}: tiers {', '.join(alias(t) for t in sorted(profile.models))}."
    lines = [f"; Rendered by sidecar-plugin from {comment(sources, '--profile')}; re-render instead of editing.",
             comment(about, "a profile's name"), ""]
    if plan.group:
        lines += [f"[group:{plan.group}]", "programs=" + ",".join(o.program for o in plan.options),
                  "priority=900", ""]
    if plan.common.plugin:
        lines += plugin_section()
    for opts in plan.options:
        lines += program_section(opts)
    lines += listener_section(plan.listener, plan.listener_argv(), plan.common)
    return "\n".join(lines).encode("utf-8")


def render_record(plan: Plan, options: Optional[Mapping[str, Any]] = None) -> bytes:
    """Return ``sidecar.json``: what the next render and apply need to know of this one.

    Which supervisord groups are ours (apply touches no other), which port
    each sidecar has (a re-render keeps them) and its LiteLLM command (apply
    tells a change LiteLLM can reload from one that needs a restart), as data
    rather than read back from the ini. ``options``: those the operator gave
    (``core.options.remember``), kept for the next render and apply; ``{}`` when none
    (a record without them is an older release's). With a kept ``--port``,
    the one profile's port then (``profile_port``: a later edit of it takes over).
    """
    doc: Dict[str, Any] = {
        "schema": SCHEMA,
        "groups": plan.groups,
        "listener": plan.listener,
        "sidecars": {o.program: {"port": o.port, "group": o.group_name, "state_file": o.state_file,
                                 "config": o.config_path, "command": sidecar_command(o),
                                 "port_owner": OWNER_SUPERVISORD if o.supervisord_socket else OWNER_SIDECAR,
                                 "traffic_metrics": o.traffic_metrics}
                     for o in plan.options},
    }
    doc["options"] = dict(options or {})
    if "port" in doc["options"] and plan.group is None:
        doc[PROFILE_PORT] = plan.sidecars[0][0].port
    return (json.dumps(doc, sort_keys=True, indent=2) + "\n").encode("utf-8")


def render_files(plan: Plan, api_key: str, master_key: str, write_master_key: bool,
                 options: Optional[Mapping[str, Any]] = None) -> List[RenderedFile]:
    """Return every file render writes, in the order it writes them."""
    files = [RenderedFile(o.config_path, render_litellm_yaml(p, api_key, master_key, o.traffic_metrics), 0o600)
             for p, o in plan.sidecars]
    if write_master_key:
        files.append(master_key_file(plan.out_dir, master_key))
    # before the include that names it: supervisord may start the program as soon as it reads the include
    files += [RenderedFile(o.launch_path, launch_doc(o), 0o644) for _, o in plan.sidecars if o.launch_path]
    files.append(RenderedFile(os.path.join(plan.out_dir, SIDECAR_CONF), render_sidecar_conf(plan), 0o644))
    files.append(RenderedFile(os.path.join(plan.out_dir, RECORD_NAME), render_record(plan, options), 0o644))
    return files


def master_key_file(out_dir: str, master_key: str) -> RenderedFile:
    """Return ``master.key`` (0600) holding a generated master key, so re-renders reuse it."""
    return RenderedFile(os.path.join(out_dir, MASTER_KEY), (master_key + "\n").encode(), 0o600)
