"""LiteLLM's proxy config for one profile, and the version tag the listener records of it.

Pure: the profile and the two secrets in, YAML bytes out. Sorted keys and
sorted aliases so the same inputs always give the same bytes.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Dict

import yaml

from sidecar_plugin.core.profiles.agentroute import Profile, alias, openrouter_model

# Claude Code sends these; LiteLLM drops unknown OpenAI params unless allowed.
ALLOWED_OPENAI_PARAMS = ["thinking", "betas"]


def config_version(data: bytes) -> str:
    """Return a short version tag of a rendered LiteLLM config.

    The listener records the version a sidecar was started with, so ``apply``
    can tell a sidecar still running an older config (LiteLLM reads it only at
    start; a re-render followed by ``supervisorctl update`` does not restart a
    program whose command is unchanged). A truncated SHA-256 says nothing
    about the keys inside.
    """
    return hashlib.sha256(data).hexdigest()[:16]


def new_master_key() -> str:
    """Return a fresh master key: LiteLLM wants the ``sk-`` prefix; 256 random bits."""
    return "sk-" + secrets.token_urlsafe(32)


def render_litellm_yaml(profile: Profile, api_key: str, master_key: str, traffic_metrics: bool = False) -> bytes:
    """Return LiteLLM's proxy config: one entry per tier, sorted by alias.

    ``traffic_metrics``: LiteLLM's own Prometheus callback, which serves
    ``/metrics`` behind the master key, each series labelled with the tier's
    alias (``requested_model``, ``model_group``).
    """
    entries = []
    for tier in sorted(profile.models, key=alias):
        params: Dict[str, object] = {
            "model": openrouter_model(profile.models[tier]),
            "api_key": api_key,
            "allowed_openai_params": list(ALLOWED_OPENAI_PARAMS),
        }
        if profile.api_base:
            params["api_base"] = profile.api_base
        entries.append({"model_name": alias(tier), "litellm_params": params})
    doc: Dict[str, object] = {"model_list": entries, "general_settings": {"master_key": master_key}}
    if traffic_metrics:
        doc["litellm_settings"] = {"callbacks": ["prometheus"]}
    header = f"# Rendered by sidecar-plugin from {profile.source}; holds secrets (mode 0600).\n"
    return (header + yaml.safe_dump(doc, sort_keys=True, default_flow_style=False)).encode("utf-8")
