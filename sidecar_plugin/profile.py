"""The public name of the profile rules: ``sidecar_plugin.profile.alias(tier)`` (the contract's).

The rules live in the pure core (``core.profiles.agentroute``); this module keeps the
import path the contract promises to operators and the gateway.
"""

from sidecar_plugin.core.profiles.agentroute import (
    Profile, ProfileError, alias, load_profile, openrouter_model, parse_profile,
)

__all__ = ["Profile", "ProfileError", "alias", "load_profile", "openrouter_model", "parse_profile"]
