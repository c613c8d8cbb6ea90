"""Failure injection: make the next N requests matching a method and path fail with a given status.

Used by tests of retry logic (e.g. a 500 on the first PATCH, a 409 Conflict on an update). Rules are
consumed in the order they were added; the first matching rule with calls left wins.
"""

from __future__ import annotations

import fnmatch
import threading
from dataclasses import dataclass, field
from typing import Any

# Reason strings the real API server puts into `Status.reason` for these codes.
_REASONS: dict[int, str] = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    410: "Expired",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


@dataclass
class FailureRule:
    """Fail ``times`` requests whose method and URL path match with ``status``."""

    method: str
    path: str  # exact path or fnmatch-style glob, matched against the URL path without the query
    status: int = 500
    times: int = 1
    message: str | None = None
    hits: int = field(default=0, init=False)

    def matches(self, method: str, path: str) -> bool:
        method_ok = self.method in ("*", method.upper())
        return method_ok and fnmatch.fnmatchcase(path, self.path)

    @property
    def reason(self) -> str:
        return _REASONS.get(self.status, "InternalError")

    def describe(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "times": self.times,
            "hits": self.hits,
        }


class FailureInjector:
    """Thread-safe list of failure rules (tests add them from another thread than the server's)."""

    def __init__(self) -> None:
        self._rules: list[FailureRule] = []
        self._mutex = threading.Lock()

    def add(
        self, method: str, path: str, status: int = 500, times: int = 1, message: str | None = None
    ) -> FailureRule:
        rule = FailureRule(method.upper(), path, status, times, message)
        with self._mutex:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._mutex:
            self._rules.clear()

    def take(self, method: str, path: str) -> FailureRule | None:
        """The rule that fails this request, if any (counting the hit and dropping spent rules)."""
        with self._mutex:
            for rule in self._rules:
                if rule.matches(method, path):
                    rule.hits += 1
                    if rule.hits >= rule.times:
                        self._rules.remove(rule)
                    return rule
        return None

    def pending(self) -> list[dict[str, Any]]:
        with self._mutex:
            return [rule.describe() for rule in self._rules]
