"""Load and validate an AgentRoute profile: which OpenRouter model serves each tier.

A profile is the operator's input, so it is checked completely before anything
is rendered: a bad one is refused with one line naming the file, the field and
the problem. AgentRoute's own saved profile JSON (``name``, ``port``,
``models``, ``created``) loads unchanged: any name its store accepts, ``port: 0``
as "not set", ``created`` and keys this package does not know ignored (so newer
AgentRoute profiles keep loading); only ``models: null`` (no tier mapped yet)
is refused, with a line saying so. A key that is not one of these but close to
one (``prot``, ``modles``) is a typo, not a newer field: it is named in a
warning (returned as data, ``Profile.warnings``: the faces print it), and a
required field missing beside its near miss is refused naming the near miss.
"""

from __future__ import annotations

import json
import os
import re
import stat
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple

import yaml

from sidecar_plugin.core.profiles.strictload import StrictLoadError, load_json, load_yaml
from sidecar_plugin.core.profiles.typos import found_instead, key_warnings, near_misses
from sidecar_plugin.errors import SidecarError

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
TIER_RE = re.compile(r"[a-z0-9][a-z0-9_-]*\Z")
ALIAS_PREFIX = "agentroute-"
OPENROUTER_PREFIX = "openrouter/"
MAX_PROFILE_BYTES = 1 << 20
# The top-level keys this package reads, plus AgentRoute's own ``created``: the words a typo is measured against.
KNOWN_KEYS = ("name", "port", "models", "api_base", "created")


class ProfileError(SidecarError, ValueError):
    """A profile broke a rule; ``str()`` is the one line shown to the operator."""


@dataclass(frozen=True)
class Profile:
    """A validated profile; ``models`` maps tier -> model id as written."""

    name: str
    models: Mapping[str, str]
    port: Optional[int] = None
    api_base: Optional[str] = None
    source: str = "<profile>"
    warnings: Tuple[str, ...] = field(default=(), compare=False)  # one line each: a key that looks like a typo


def alias(tier: str) -> str:
    """Return the LiteLLM model alias of a tier (AgentRoute's ``profile.Alias``).

    The one place the alias is computed, so the gateway and the rendered
    config can never disagree about a name.
    """
    return ALIAS_PREFIX + tier


def openrouter_model(model_id: str) -> str:
    """Return the LiteLLM model string routing ``model_id`` through OpenRouter."""
    if model_id.startswith(OPENROUTER_PREFIX):
        return model_id
    return OPENROUTER_PREFIX + model_id


def load_profile(path: str) -> Profile:
    """Read, parse and validate the profile at ``path``, or raise ProfileError.

    Only a regular file: a FIFO (or a device) named like a profile would
    block render forever or feed it without end.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ProfileError(f"{path}: not a regular file")
            with os.fdopen(os.dup(fd), "rb") as fh:
                raw = fh.read(MAX_PROFILE_BYTES + 1)
        finally:
            os.close(fd)
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read profile: {exc.strerror or exc}") from None
    if len(raw) > MAX_PROFILE_BYTES:
        raise ProfileError(f"{path}: profile is larger than 1 MiB")
    return parse_profile(raw, path)


def parse_profile(raw: bytes, source: str) -> Profile:
    """Parse YAML or JSON bytes into a validated Profile, or raise ProfileError."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ProfileError(f"{source}: profile is not UTF-8 text") from None
    data = _parse_text(text, source)
    return validate(data, source)


def _parse_text(text: str, source: str) -> Any:
    if os.path.splitext(source)[1].lower() == ".json":
        try:
            return load_json(text)
        except StrictLoadError as exc:
            raise ProfileError(f"{source}: {exc}") from None
        except (ValueError, RecursionError) as exc:
            raise ProfileError(f"{source}: not valid JSON: {_line(exc)}") from None
    try:
        return load_yaml(text)
    except StrictLoadError as exc:
        raise ProfileError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise ProfileError(f"{source}: not valid YAML{where}: {problem}") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise ProfileError(f"{source}: not valid YAML: {_line(exc)}") from None


def validate(data: Any, source: str) -> Profile:
    """Check every profile rule; the first broken one becomes the error line."""
    if not isinstance(data, dict):
        raise ProfileError(f"{source}: profile must be a mapping with 'name' and 'models'")
    misses = near_misses(data, KNOWN_KEYS)
    name = data.get("name")
    if name is None:
        raise ProfileError(f"{source}: name: required{found_instead(misses, 'name')}")
    problem = name_problem(name)
    if problem:
        raise ProfileError(f"{source}: name: {problem} (got {_show(name)})")
    port = data.get("port")
    if type(port) is int and port == 0:  # AgentRoute's store writes 0 for "not set"
        port = None
    if port is not None and not _is_port(port):
        raise ProfileError(f"{source}: port: must be an integer from 1 to 65535 (got {_show(port)})")
    models = _validate_models(data.get("models"), source, found_instead(misses, "models"))
    api_base = data.get("api_base")
    if api_base is not None:
        if not isinstance(api_base, str) or not re.match(r"https?://[^\s/]+\S*\Z", api_base):
            raise ProfileError(f"{source}: api_base: must be an http:// or https:// URL (got {_show(api_base)})")
    return Profile(name=name, models=models, port=port, api_base=api_base, source=source,
                   warnings=key_warnings(misses, source))


def name_problem(name: Any) -> Optional[str]:
    """Return why ``name`` is not a profile name, or None (AgentRoute's rule: non-empty, no / or \\).

    Control characters, line separators and lone surrogates are refused too:
    the name is written into the rendered include, which could not hold them
    exactly. A fleet derives its program names from it (``naming.py``).
    """
    if not isinstance(name, str) or not name:
        return "must be a non-empty string"
    if "/" in name or "\\" in name:
        return "must not contain / or \\ (AgentRoute's rule)"
    if any(unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") for ch in name):
        return "must not contain control characters or line breaks"
    return None


def _validate_models(models: Any, source: str, found: str = "") -> Dict[str, str]:
    if models is None and found:
        raise ProfileError(f"{source}: models: required (tier -> OpenRouter model id){found}")
    if models is None:
        raise ProfileError(f"{source}: models: required, but no tier is mapped yet (AgentRoute saves a new "
                           "profile with models: null); map at least one tier to an OpenRouter model id")
    if not isinstance(models, dict):
        raise ProfileError(f"{source}: models: must be a mapping of tier -> OpenRouter model id")
    if not models:
        raise ProfileError(f"{source}: models: no tier is mapped yet; it must name at least one tier")
    out: Dict[str, str] = {}
    for tier, model in models.items():
        if not isinstance(tier, str) or not TIER_RE.match(tier):
            raise ProfileError(f"{source}: models.{_show(tier)}: tier name must match [a-z0-9][a-z0-9_-]*")
        if not isinstance(model, str) or not model.strip():
            raise ProfileError(f"{source}: models.{tier}: model id must be a non-empty string")
        if any(ch.isspace() for ch in model) or model == OPENROUTER_PREFIX or model.endswith("/"):
            raise ProfileError(f"{source}: models.{tier}: model id {_show(model)} is not a valid OpenRouter model id")
        out[tier] = model
    return out


def _is_port(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535


def _show(value: Any, limit: int = 60) -> str:
    """Quote a bad value for an error line, short and on one line.

    Serialises at most ``limit`` characters' worth: the value may be huge
    (a 1 MiB string, a list of a million items), and an error must stay cheap.
    """
    text = _bounded_json(value, limit + 1)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _bounded_json(value: Any, budget: int) -> str:
    """Return a JSON-like rendering of ``value``, stopping once ``budget`` characters are reached."""
    if isinstance(value, str):
        return json.dumps(value[:budget])
    if isinstance(value, (list, tuple, dict)):
        items = list(value.items())[:budget] if isinstance(value, dict) else list(value[:budget])
        parts, used = [], 2
        for item in items:
            part = (f"{_bounded_json(item[0], budget - used)}: {_bounded_json(item[1], budget - used)}"
                    if isinstance(value, dict) else _bounded_json(item, budget - used))
            parts.append(part)
            used += len(part) + 2
            if used >= budget:
                break
        body = ", ".join(parts)
        return "{" + body + "}" if isinstance(value, dict) else "[" + body + "]"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return "a very large integer"
    text = json.dumps(value, default=str)
    return text[:budget]


def _line(exc: BaseException, limit: int = 200) -> str:
    """Return an exception's text as one bounded line."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."
