"""Parse a profile's YAML or JSON text in bounded memory and time, or refuse it.

A profile is operator input, but it may come from a folder other people can
write to: a 659-byte file of nested YAML aliases expands to gigabytes, a
deeply nested JSON document overflows the stack, and a key written twice
silently loses one of its values. So: no YAML anchors or aliases at all (a
profile never needs them), a nesting limit checked while parsing, and every
duplicate key refused, each naming the field (``models.heavy``) and the line.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Tuple

import yaml
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from sidecar_plugin.errors import SidecarError

MAX_DEPTH = 32


class StrictLoadError(SidecarError, ValueError):
    """The text was refused; ``field`` names where (may be empty), ``problem`` says why."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}" if field else problem)
        self.field = field
        self.problem = problem


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that refuses anchors and aliases and stops at MAX_DEPTH while composing.

    Refusing at compose time matters: the alias bomb is never expanded, and
    the nesting limit holds before any recursion deep enough to overflow.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(AliasEvent):
            event = self.peek_event()
            raise StrictLoadError("", f"YAML anchors and aliases are not allowed (line {event.start_mark.line + 1})")
        event = self.peek_event()
        if getattr(event, "anchor", None) is not None:
            raise StrictLoadError("", f"YAML anchors and aliases are not allowed (line {event.start_mark.line + 1})")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise StrictLoadError("", f"nested deeper than {MAX_DEPTH} levels (line {event.start_mark.line + 1})")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _path(parent: str, key: str) -> str:
    return f"{parent}.{key}" if parent else key


def _check_yaml_node(node: Node, where: str) -> None:
    """Refuse duplicate keys anywhere in the tree, naming the field."""
    stack: List[Tuple[Node, str]] = [(node, where)]
    while stack:
        current, at = stack.pop()
        if isinstance(current, MappingNode):
            seen: Dict[Any, Any] = {}
            for key_node, value_node in current.value:
                if isinstance(key_node, ScalarNode):
                    key = key_node.value
                    if key in seen:
                        raise StrictLoadError(_path(at, _short(key)),
                                              f"duplicate key (lines {seen[key] + 1} and "
                                              f"{key_node.start_mark.line + 1})")
                    seen[key] = key_node.start_mark.line
                    stack.append((value_node, _path(at, _short(key))))
                else:
                    stack.append((value_node, at))
        elif isinstance(current, SequenceNode):
            stack.extend((item, f"{at}[{i}]") for i, item in enumerate(current.value))


def load_yaml(text: str) -> Any:
    """Return the one YAML document of ``text``; raise StrictLoadError or yaml.YAMLError."""
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_yaml_node(node, "")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _depth(value: Any) -> int:
    """Return how deep ``value`` nests, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        current, level = stack.pop()
        if isinstance(current, (list, dict)):
            deepest = max(deepest, level)
            items = current.values() if isinstance(current, dict) else current
            stack.extend((item[1] if isinstance(current, _Pairs) else item, level + 1) for item in items)
    return deepest


class _Pairs(list):
    """An object's members as read, in order, so duplicates can be named with their path."""


def _build(value: Any, at: str) -> Any:
    if isinstance(value, _Pairs):
        out = {}
        for key, item in value:
            if key in out:
                raise StrictLoadError(_path(at, _short(key)), "duplicate key")
            out[key] = _build(item, _path(at, _short(key)))
        return out
    if isinstance(value, list):
        return [_build(item, f"{at}[{i}]") for i, item in enumerate(value)]
    return value


def load_json(text: str) -> Any:
    """Return the JSON document of ``text``; raise StrictLoadError or ValueError (bad JSON)."""
    try:
        doc = json.loads(text, object_pairs_hook=_Pairs)
    except RecursionError:  # the C scanner stops at the interpreter's recursion limit
        raise StrictLoadError("", f"nested deeper than {MAX_DEPTH} levels") from None
    if _depth(doc) > MAX_DEPTH:
        raise StrictLoadError("", f"nested deeper than {MAX_DEPTH} levels")
    return _build(doc, "")


def _short(key: str, limit: int = 40) -> str:
    """Return a key fit for an error line: one line, bounded."""
    text = key.replace("\n", "\\n").replace("\r", "\\r")
    return text if len(text) <= limit else text[:limit - 3] + "..."
