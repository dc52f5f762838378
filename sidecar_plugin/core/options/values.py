"""What a value of an option may be: the parsers of its text and the bounds render holds it to.

Each parser turns the text of a command line into a value or raises a
ValueError whose text is the one line for the operator; ``Bounds`` says why a
value (parsed, or kept in a record and never parsed) is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

from sidecar_plugin.errors import SidecarError
from sidecar_plugin.names import PORT_OWNERS


class BadValue(SidecarError, ValueError):
    """An option's text is refused; a ValueError, as argparse's ``type=`` and the listener's parser expect."""


def positive_number(text: str) -> float:
    """Parse a finite number above 0: a timeout of nan, inf, 0 or less would never (or always) fire."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise BadValue(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise BadValue(f"must be a finite number of seconds above 0 (got {text})")
    return value


def whole_number(text: str, low: int, high: Optional[int] = None) -> int:
    """Parse a whole number from ``low`` (to ``high``)."""
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise BadValue(f"not a whole number: {text!r}") from None
    if high is not None and not low <= value <= high:
        raise BadValue(f"must be from {low} to {high} (got {text})")
    if value < low:
        raise BadValue(f"must be {low} or more (got {text})")
    return value


def positive_int(text: str) -> int:
    """Parse a whole number above 0."""
    return whole_number(text, 1)


def port_number(text: str) -> int:
    """Parse a TCP port."""
    return whole_number(text, 1, 65535)


def port_owner(text: str) -> str:
    if text not in PORT_OWNERS:
        raise BadValue(f"must be one of {', '.join(PORT_OWNERS)} (got {text[:40]!r})")
    return text


def switch(text: str) -> bool:
    """An option without a value (``--no-autostart``): given is true."""
    return True


@dataclass(frozen=True)
class Bounds:
    """The values render accepts (a value kept in a record was never parsed, so render checks them all)."""

    low: float
    high: float
    unit: str = ""  # "seconds", "MB" or "" (a count)
    above: bool = False  # the low end is excluded ("above 0")
    why: str = ""  # said after the refusal

    def problem(self, value: Any) -> Optional[str]:
        """Why ``value`` is out of bounds (one line, without the flag), or None."""
        if value is None:
            return None
        low_ok = value > self.low if self.above else value >= self.low
        if math.isfinite(value) and low_ok and value <= self.high:
            return None
        words = f"a number of {self.unit} " if self.unit else ""
        low, high = shown(self.low), shown(self.high)
        span = f"above {low} and at most {high}" if self.above else f"from {low} to {high}"
        return f"must be {words}{span} (got {shown(value)}){self.why}"


def shown(value: Any) -> str:
    """A number as a person writes it: 20, 0.5, 1048576."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:g}" if isinstance(value, float) else str(value)
