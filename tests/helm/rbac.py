"""Kubernetes RBAC's rule check, for asserting that the requests a client made are the ones a Role allows:
a request's path and method become (verb, group, resource[/subresource], name), as the API server's
request-info resolver does, and a rule allows it when every part matches (an empty ``resourceNames``
matches any name; a list or create has no name, so only such rules allow it)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

_PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"/namespaces/(?P<namespace>[^/]+)/(?P<resource>[^/]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>[^/]+))?$"
)
_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


@dataclass(frozen=True)
class Access:
    verb: str
    group: str
    resource: str
    """``deployments`` or ``deployments/scale``."""
    name: str
    namespace: str

    def __str__(self) -> str:
        return f"{self.verb} {self.group or 'core'}/{self.resource} {self.namespace}/{self.name or '*'}"


def access_of(method: str, path: str, query: str = "") -> Access | None:
    """The access a namespaced resource request needs; None for discovery and other non-resource paths."""
    match = _PATH.match(path)
    if match is None:
        return None
    name, sub = match["name"] or "", match["sub"]
    resource = f"{match['resource']}/{sub}" if sub else match["resource"]
    if method == "GET":
        verb = "get" if name else ("watch" if "watch=true" in query.lower() else "list")
    else:
        verb = _VERBS[method]
    return Access(verb, match["group"] or "", resource, name, match["namespace"])


def allows(rule: Mapping[str, Any], access: Access) -> bool:
    def has(field: str, value: str) -> bool:
        values = rule.get(field) or []
        return value in values or "*" in values

    names = rule.get("resourceNames") or []
    return (
        has("apiGroups", access.group)
        and has("resources", access.resource)
        and has("verbs", access.verb)
        and (not names or access.name in names)
    )


def denied(rules: Iterable[Mapping[str, Any]], accesses: Iterable[Access]) -> list[Access]:
    rules = list(rules)
    return [access for access in accesses if not any(allows(rule, access) for rule in rules)]
