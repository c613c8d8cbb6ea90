"""Retrying one Kubernetes API call: what is worth another try, how long to wait, and the error after
the last try.

Worth retrying are the answers a healthy request can get from a busy or restarting API server (409
Conflict, 429 TooManyRequests, 5xx) and transport failures (refused or reset connections, timeouts).
Everything else (400, 403, 404, 422 ...) is an answer about the request itself, and another try would
get the same one, so it fails at once. Retrying a write is safe because every write of this project sets
absolute values (``replicas: 3``, ``batch_size: "8"``): a write that landed but whose response was lost
lands again as a no-op.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TypeVar

import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from ipa_tasks.actuation.target import TargetError

T = TypeVar("T")
Sleep = Callable[[float], object]

RETRIED_STATUSES = frozenset({409, 429})
# NewConnectionError (refused, unresolvable) is a urllib3 TimeoutError; ProtocolError is a reset or a
# connection the server closed mid-answer; MaxRetryError is what urllib3 raises when its own retries are on.
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (
    urllib3.exceptions.TimeoutError,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.MaxRetryError,
    ConnectionError,
    TimeoutError,
)


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, ApiException):
        status = exc.status or 0  # 0: the client's own failure (e.g. TLS), not the server's answer
        return status in RETRIED_STATUSES or status >= 500
    return isinstance(exc, TRANSPORT_ERRORS)


def describe_failure(exc: BaseException) -> str:
    """``HTTP 403 Forbidden: <the server's message>``, or the transport error's type and text."""
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}{_server_message(exc)}"
    return f"{type(exc).__name__}: {exc}"


def _server_message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body) if exc.body else {}
    except (TypeError, ValueError):
        return ""
    message = body.get("message") if isinstance(body, dict) else None
    return f": {message}" if message else ""


def backoff_delays(attempts: int, backoff_s: float) -> list[float]:
    """The waits between ``attempts`` tries: ``backoff_s``, twice that, four times ..."""
    return [backoff_s * 2**i for i in range(max(attempts - 1, 0))]


def call_with_retries(
    fn: Callable[[], T], *, what: str, attempts: int, backoff_s: float, sleep: Sleep = time.sleep
) -> T:
    """``fn()``, tried up to ``attempts`` times while it fails in a retryable way (module docstring).

    Raises :class:`TargetError` naming ``what``, the last failure and the number of attempts.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    delays = backoff_delays(attempts, backoff_s)
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except (ApiException, *TRANSPORT_ERRORS) as exc:
            if not is_retryable(exc):
                raise TargetError(f"{what}: {describe_failure(exc)} (not retried)") from exc
            if attempt == attempts:
                raise TargetError(
                    f"{what}: {describe_failure(exc)} (gave up after {attempts} attempt(s))"
                ) from exc
            sleep(delays[attempt - 1])
    raise AssertionError("unreachable")  # the loop returns or raises
