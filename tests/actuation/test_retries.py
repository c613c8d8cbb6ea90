"""Which failures are retried, how long between tries, and the error after the last one (no server: the
calls are stand-ins that fail on cue; the same rules against the fake API server are in
``test_kubernetes.py``)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from ipa_tasks.actuation.retries import backoff_delays, call_with_retries, describe_failure, is_retryable
from ipa_tasks.actuation.target import TargetError


def api_error(status: int, reason: str = "", message: str | None = None) -> ApiException:
    exc = ApiException(status=status, reason=reason)
    if message is not None:
        exc.body = json.dumps({"kind": "Status", "message": message, "code": status})
    return exc


def failing(*failures: BaseException, result: str = "ok") -> tuple[Callable[[], str], list[int]]:
    """A call that raises ``failures`` in turn, then returns ``result``; and its call counter."""
    calls = [0]

    def call() -> str:
        calls[0] += 1
        if calls[0] <= len(failures):
            raise failures[calls[0] - 1]
        return result

    return call, calls


@pytest.mark.parametrize(
    ("failure", "retried"),
    [
        (api_error(409, "Conflict"), True),
        (api_error(429, "TooManyRequests"), True),
        (api_error(500, "InternalError"), True),
        (api_error(503, "ServiceUnavailable"), True),
        (api_error(400, "BadRequest"), False),
        (api_error(403, "Forbidden"), False),
        (api_error(404, "NotFound"), False),
        (api_error(422, "Invalid"), False),
        (ApiException(status=0, reason="SSLError"), False),  # the client's own failure, e.g. a bad cert
        (urllib3.exceptions.ReadTimeoutError(None, "/x", "read timed out"), True),
        (urllib3.exceptions.NewConnectionError(None, "refused"), True),
        (urllib3.exceptions.ProtocolError("Connection aborted."), True),
        (urllib3.exceptions.MaxRetryError(None, "/x"), True),
        (ConnectionResetError(), True),
        (TimeoutError(), True),
        (ValueError("a bug"), False),
    ],
)
def test_what_is_retried(failure: BaseException, retried: bool) -> None:
    assert is_retryable(failure) is retried


def test_retryable_failures_are_retried_with_exponential_backoff() -> None:
    slept: list[float] = []
    call, calls = failing(api_error(500), api_error(409), urllib3.exceptions.ProtocolError("reset"))
    assert call_with_retries(call, what="patch x", attempts=4, backoff_s=0.5, sleep=slept.append) == "ok"
    assert calls == [4]
    assert slept == [0.5, 1.0, 2.0]
    assert backoff_delays(5, 0.1) == pytest.approx([0.1, 0.2, 0.4, 0.8])


def test_after_the_last_attempt_the_error_says_what_why_and_how_often() -> None:
    slept: list[float] = []
    call, calls = failing(*[api_error(503, "ServiceUnavailable", "etcd is down")] * 3)
    with pytest.raises(TargetError) as failed:
        call_with_retries(
            call, what="scale deployment ipa/video-detect", attempts=3, backoff_s=1, sleep=slept.append
        )
    assert str(failed.value) == (
        "scale deployment ipa/video-detect: HTTP 503 ServiceUnavailable: etcd is down "
        "(gave up after 3 attempt(s))"
    )
    assert isinstance(failed.value.__cause__, ApiException)
    assert calls == [3]
    assert slept == [1, 2]  # no wait after the last attempt


def test_other_api_errors_fail_at_once() -> None:
    call, calls = failing(api_error(403, "Forbidden", 'deployments.apps "x" is forbidden'))
    with pytest.raises(
        TargetError, match=r'^read x: HTTP 403 Forbidden: deployments.apps "x" is forbidden \(not retried\)$'
    ):
        call_with_retries(call, what="read x", attempts=4, backoff_s=0, sleep=lambda s: None)
    assert calls == [1]


def test_other_exceptions_are_not_caught() -> None:
    call, calls = failing(KeyError("a bug"))
    with pytest.raises(KeyError):
        call_with_retries(call, what="x", attempts=4, backoff_s=0, sleep=lambda s: None)
    assert calls == [1]


def test_describe_failure_copes_with_bodies_that_are_not_a_status() -> None:
    not_json = api_error(502, "Bad Gateway")
    not_json.body = "<html>bad gateway</html>"
    assert describe_failure(not_json) == "HTTP 502 Bad Gateway"
    assert describe_failure(TimeoutError("timed out")) == "TimeoutError: timed out"


def test_at_least_one_attempt() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        call_with_retries(lambda: 1, what="x", attempts=0, backoff_s=0)
