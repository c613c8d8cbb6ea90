"""Label and field selectors, as the ``labelSelector`` / ``fieldSelector`` query parameters of LIST/WATCH.

Label selectors support the whole string syntax of Kubernetes: ``k=v``, ``k==v``, ``k!=v``, ``k``,
``!k``, ``k in (a,b)`` and ``k notin (a,b)``, comma-separated and all required. Field selectors
support ``path=v``, ``path==v`` and ``path!=v`` on any dotted path (``metadata.name``,
``status.phase``, ``involvedObject.name``...), where a real server only allows a few per resource.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_VALUE = r"[-A-Za-z0-9_.]*"
_SET_TERM = re.compile(rf"^({_KEY})\s+(in|notin)\s*\(([^)]*)\)$")
_EQ_TERM = re.compile(rf"^({_KEY})\s*(==|=|!=)\s*({_VALUE})$")
_EXISTS_TERM = re.compile(rf"^(!?)\s*({_KEY})$")
_FIELD_TERM = re.compile(r"^([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*)$")


class SelectorError(ValueError):
    """An unparsable selector (the API server answers 400 Bad Request)."""


@dataclass(frozen=True)
class Requirement:
    """One term of a selector: ``key op values``."""

    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: frozenset[str] = frozenset()

    def matches(self, actual: str | None) -> bool:
        """Whether a label/field value (``None`` when absent) satisfies the term."""
        match self.op:
            case "=" | "in":
                return actual is not None and actual in self.values
            case "!=" | "notin":
                # As in Kubernetes, an object without the key satisfies a negative term.
                return actual is None or actual not in self.values
            case "exists":
                return actual is not None
            case _:
                return actual is None


def _split_terms(text: str) -> list[str]:
    """Split on the commas outside ``(...)`` groups."""
    terms: list[str] = []
    depth, current = 0, []
    for char in text:
        if char == "," and depth == 0:
            terms.append("".join(current).strip())
            current = []
            continue
        depth += {"(": 1, ")": -1}.get(char, 0)
        current.append(char)
    terms.append("".join(current).strip())
    return [term for term in terms if term]


def parse_label_selector(text: str) -> list[Requirement]:
    """Parse a label selector string into its requirements (all must hold)."""
    requirements: list[Requirement] = []
    for term in _split_terms(text):
        if match := _SET_TERM.match(term):
            values = frozenset(v.strip() for v in match.group(3).split(",") if v.strip())
            requirements.append(Requirement(match.group(1), match.group(2), values))
        elif match := _EQ_TERM.match(term):
            op = "!=" if match.group(2) == "!=" else "="
            requirements.append(Requirement(match.group(1), op, frozenset({match.group(3)})))
        elif match := _EXISTS_TERM.match(term):
            requirements.append(Requirement(match.group(2), "!exists" if match.group(1) else "exists"))
        else:
            raise SelectorError(f"unable to parse requirement: {term!r}")
    return requirements


def parse_field_selector(text: str) -> list[Requirement]:
    """Parse a field selector string (equality terms on dotted paths)."""
    requirements: list[Requirement] = []
    for term in _split_terms(text):
        match = _FIELD_TERM.match(term)
        if match is None:
            raise SelectorError(f"invalid field selector term: {term!r}")
        op = "!=" if match.group(2) == "!=" else "="
        requirements.append(Requirement(match.group(1), op, frozenset({match.group(3).strip()})))
    return requirements


def _field_value(obj: Mapping[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    # A missing field compares as the empty string, as on a real server.
    return "" if value is None else str(value)


def label_matcher(text: str | None) -> Callable[[Mapping[str, Any]], bool]:
    """A predicate on whole objects for a ``labelSelector`` (``None``/empty matches everything)."""
    requirements = parse_label_selector(text or "")

    def matches(obj: Mapping[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(req.matches(labels.get(req.key)) for req in requirements)

    return matches


def field_matcher(text: str | None) -> Callable[[Mapping[str, Any]], bool]:
    """A predicate on whole objects for a ``fieldSelector`` (``None``/empty matches everything)."""
    requirements = parse_field_selector(text or "")

    def matches(obj: Mapping[str, Any]) -> bool:
        return all(req.matches(_field_value(obj, req.key)) for req in requirements)

    return matches


def object_matcher(params: Mapping[str, str]) -> Callable[[Mapping[str, Any]], bool]:
    """Combine the ``labelSelector`` and ``fieldSelector`` query parameters into one predicate."""
    by_labels = label_matcher(params.get("labelSelector"))
    by_fields = field_matcher(params.get("fieldSelector"))
    return lambda obj: by_labels(obj) and by_fields(obj)
