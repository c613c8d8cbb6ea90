"""Failure injection: make the next N requests matching a method and path fail with a given status, or
answer late.

Used by tests of retry logic (e.g. a 500 on the first PATCH, a 409 Conflict on an update, a response
slower than the client's timeout). Rules are consumed in the order they were added; the first matching
rule with calls left wins. A rule with ``delay_s`` waits that long before it answers; with ``status`` 0
it then serves the request normally (only slow, as an overloaded apiserver whose write still lands after
the client gave up), else it fails with ``status``.
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
    """Fail ``times`` requests whose method and URL path match with ``status`` (0: serve them, late),
    after waiting ``delay_s`` seconds."""

    method: str
    path: str  # exact path or fnmatch-style glob, matched against the URL path without the query
    status: int = 500
    times: int = 1
    message: str | None = None
    delay_s: float = 0.0
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
            "delay_s": self.delay_s,
        }

    @property
    def fails(self) -> bool:
        """False for a rule that only delays (status 0)."""
        return self.status != 0


class FailureInjector:
    """Thread-safe list of failure rules (tests add them from another thread than the server's)."""

    def __init__(self) -> None:
        self._rules: list[FailureRule] = []
        self._mutex = threading.Lock()

    def add(
        self,
        method: str,
        path: str,
        status: int = 500,
        times: int = 1,
        message: str | None = None,
        delay_s: float = 0.0,
    ) -> FailureRule:
        if status == 0 and delay_s <= 0:
            raise ValueError("a rule with status 0 only delays requests: give it a delay_s > 0")
        rule = FailureRule(method.upper(), path, status, times, message, delay_s)
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
