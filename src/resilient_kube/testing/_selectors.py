"""Label and field selectors, parsed the way the API server parses ``?labelSelector=``."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["Matcher", "parse_field_selector", "parse_label_selector"]

#: A predicate over one stored object.
Matcher = Callable[[Mapping[str, Any]], bool]

# A qualified label key: an optional DNS-subdomain prefix and a name of at most 63 characters.
_KEY = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                  r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")  # fmt: skip
_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_FIELD_TERM = re.compile(r"^(?P<path>[A-Za-z0-9_.]+)\s*(?P<op>!=|==|=)\s*(?P<value>[^,]*)$")
_SET = re.compile(r"^(?P<key>\S+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")


def _split_terms(text: str) -> list[str]:
    """Split on commas outside parentheses: ``a in (x,y),b`` is two terms."""
    terms, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return [term.strip() for term in terms]


def _checked(key: str, values: list[str], term: str) -> tuple[str, list[str]]:
    if not _KEY.match(key):
        raise ValueError(f"invalid label key {key!r} in selector term {term!r}")
    for value in values:
        if not _VALUE.match(value):
            raise ValueError(f"invalid label value {value!r} in selector term {term!r}")
    return key, values


def _requirement(term: str) -> Callable[[Mapping[str, str]], bool]:
    if term.startswith("!"):
        key, _ = _checked(term[1:].strip(), [], term)
        return lambda labels: key not in labels
    found = _SET.match(term)
    if found:
        values = [v.strip() for v in found["values"].split(",")]
        key, _ = _checked(found["key"], values, term)
        allowed = frozenset(values)
        if found["op"] == "in":
            return lambda labels: key in labels and labels[key] in allowed
        return lambda labels: key not in labels or labels[key] not in allowed
    for op in ("!=", "==", "="):
        if op in term:
            raw_key, raw_value = term.split(op, 1)
            key, (value,) = _checked(raw_key.strip(), [raw_value.strip()], term)
            if op == "!=":
                # The API server matches `key!=value` when the key is absent too.
                return lambda labels: labels.get(key) != value
            return lambda labels: labels.get(key) == value
    key, _ = _checked(term, [], term)
    return lambda labels: key in labels


def _labels(obj: Mapping[str, Any]) -> Mapping[str, str]:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels if isinstance(labels, dict) else {}


def parse_label_selector(text: str | None) -> Matcher:
    """Return a predicate for a ``labelSelector``.

    Supports ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``, ``k`` and ``!k``.

    Raises:
        ValueError: the selector does not parse (the server answers 400 BadRequest).
    """
    if not text or not text.strip():
        return lambda obj: True
    terms = _split_terms(text)
    if not all(terms):
        raise ValueError(f"empty term in label selector {text!r}")
    requirements = [_requirement(term) for term in terms]
    return lambda obj: all(req(_labels(obj)) for req in requirements)


def _field(obj: Mapping[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_field_selector(text: str | None) -> Matcher:
    """Return a predicate for ``fieldSelector`` (``path=value``, ``path==value``, ``path!=value``).

    Any dotted path works (``metadata.name``, ``status.phase``, ``spec.nodeName``); a missing
    field compares as the empty string.

    Raises:
        ValueError: the selector does not parse (the server answers 400 BadRequest).
    """
    if not text or not text.strip():
        return lambda obj: True
    checks: list[tuple[str, bool, str]] = []
    for term in _split_terms(text):
        found = _FIELD_TERM.match(term)
        if not found:
            raise ValueError(f"invalid field selector term {term!r}: expected path=value")
        checks.append((found["path"], found["op"] != "!=", found["value"]))
    return lambda obj: all((_field(obj, p) == v) == eq for p, eq, v in checks)
