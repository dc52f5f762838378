"""The master key rule: which keys the sidecar may be given, and the form of the ones it makes.

LiteLLM checks the master key as an ``Authorization: Bearer`` token. It needs
no ``sk-`` prefix for that (measured on 1.106.2: AgentRoute's gateway token,
64 hex characters, is accepted on ``/v1/messages``), so a provided key is
judged by what makes it safe and usable, not by its form:

- printable ASCII without spaces (0x21-0x7E): it travels in an HTTP header
  and LiteLLM strips the ``Bearer `` prefix by text;
- at most 512 characters;
- not ``os.environ/...``: LiteLLM would read that as the name of a variable
  and check another key;
- at least 32 characters after an optional ``sk-`` prefix (32 hex digits are
  128 bits; ``openssl rand -hex 32`` and AgentRoute's token give 64);
- at least 8 different characters: catches ``aaaa...`` and keyboard runs, never
  a random key.

A generated key (``render.new_master_key``) keeps LiteLLM's ``sk-`` convention
and carries 256 random bits; it passes this rule too.
"""

from __future__ import annotations

from typing import Optional

MIN_BODY_LENGTH = 32
MAX_LENGTH = 512
MIN_DISTINCT = 8
SK_PREFIX = "sk-"
ENV_REFERENCE = "os.environ/"


def master_key_problem(key: str) -> Optional[str]:
    """Return why ``key`` may not be the sidecar's master key (words for an error line), or None.

    The words never quote the key: they end up on a terminal.
    """
    if len(key) > MAX_LENGTH:
        return f"is longer than {MAX_LENGTH} characters"
    if any(not "\x21" <= ch <= "\x7e" for ch in key):
        return "must be printable ASCII without spaces (it is sent as an 'Authorization: Bearer' token)"
    if key.startswith(ENV_REFERENCE):
        return f"must not start with {ENV_REFERENCE!r} (LiteLLM would read it as the name of a variable)"
    body = key[len(SK_PREFIX):] if key.startswith(SK_PREFIX) else key
    if len(body) < MIN_BODY_LENGTH:
        return (f"is too short: it needs at least {MIN_BODY_LENGTH} characters (besides an optional 'sk-'); "
                f"make one with: openssl rand -hex 32")
    if len(set(body)) < MIN_DISTINCT:
        return f"has fewer than {MIN_DISTINCT} different characters: use a random key (openssl rand -hex 32)"
    return None
