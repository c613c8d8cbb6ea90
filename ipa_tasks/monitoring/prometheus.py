"""The request rate from Prometheus, the way a cluster deployment is monitored.

One range query (``/api/v1/query_range``, step 1 s) over the window; every series it returns is summed per
timestamp, so a query that yields one series per router pod gives the pipeline's total. Prometheus
evaluates a rate *at* an instant over the time before it, so the second ``[t, t + 1)`` of the window is
read at instant ``t + 1`` and the query ends at ``floor(now)``. Anything that keeps the answer from being
used (no connection, a timeout, an HTTP or PromQL error, a body that is not a range-query result) is a
:class:`~ipa_tasks.monitoring.source.SourceUnavailable` that says which.
"""

from __future__ import annotations

import http.client
import json
import math
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import urlencode
from urllib.request import Request, urlopen

import numpy as np

from ipa_tasks.monitoring.source import SourceUnavailable, window_seconds

DEFAULT_PROMETHEUS_QUERY = 'sum(rate(ipa_router_requests_total{{pipeline="{pipeline}"}}[5s]))'
"""Requests per second into one pipeline's router; ``{pipeline}`` is filled in with ``str.format``."""


class PrometheusSource:
    def __init__(self, url: str, query: str, *, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.query = query
        self.timeout_s = timeout_s
        self.name = f"prometheus {self.url}"

    def rates(self, seconds: int, now: float) -> np.ndarray:
        first = int(window_seconds(seconds, now)[0]) + 1  # the instant that closes the oldest second
        result = _matrix(self._get(first, first + seconds - 1), self.url)
        return _on_grid(result, first, seconds, self.url)

    def _get(self, start: int, end: int) -> Any:
        query = urlencode({"query": self.query, "start": start, "end": end, "step": 1})
        request = Request(f"{self.url}/api/v1/query_range?{query}", headers={"Accept": "application/json"})
        try:
            with urlopen(request, timeout=self.timeout_s) as response:
                body = response.read()
        except HTTPError as exc:
            raise SourceUnavailable(f"{self.url} answered HTTP {exc.code}: {_error_text(exc)}") from exc
        except URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise SourceUnavailable(self._timed_out()) from exc
            raise SourceUnavailable(f"cannot connect to {self.url}: {_reason(exc.reason)}") from exc
        except TimeoutError as exc:
            raise SourceUnavailable(self._timed_out()) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise SourceUnavailable(f"the connection to {self.url} failed: {_reason(exc)}") from exc
        try:
            return json.loads(body)
        except ValueError as exc:
            raise SourceUnavailable(f"{self.url} answered something that is not JSON: {body[:80]!r}") from exc

    def _timed_out(self) -> str:
        return f"{self.url} did not answer within {self.timeout_s:g} s"


def _reason(reason: object) -> str:
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


def _error_text(exc: HTTPError) -> str:
    # Prometheus puts what went wrong in a JSON body even on 4xx/5xx; a proxy in front may not.
    try:
        body = exc.read()
    except (OSError, http.client.HTTPException):
        return exc.reason or "no details"
    try:
        payload = json.loads(body)
        return f"{payload['errorType']}: {payload['error']}"
    except (ValueError, TypeError, KeyError):
        return body[:200].decode("utf-8", "replace").strip() or str(exc.reason)


def _matrix(payload: Any, url: str) -> list[Any]:
    if not isinstance(payload, dict) or "status" not in payload:
        raise SourceUnavailable(f"{url} answered JSON that is not a Prometheus API response")
    if payload["status"] != "success":
        kind, error = payload.get("errorType", "error"), payload.get("error", "no details")
        raise SourceUnavailable(f"the query failed at {url}: {kind}: {error}")
    data = payload.get("data")
    result_type = data.get("resultType") if isinstance(data, dict) else None
    if result_type != "matrix" or not isinstance(data.get("result"), list):
        raise SourceUnavailable(f"{url} answered a {result_type or 'malformed'} result, expected a matrix")
    return data["result"]


def _on_grid(result: list[Any], first: int, seconds: int, url: str) -> np.ndarray:
    total = np.full(seconds, np.nan)
    undefined = np.zeros(seconds, dtype=bool)
    try:
        for series in result:
            for timestamp, text in series.get("values", []):
                slot = round(float(timestamp)) - first
                if not 0 <= slot < seconds:
                    continue
                value = float(text)
                if not math.isfinite(value):
                    # One series undefined makes the total unknown; a series absent at an instant (a pod
                    # not yet or no longer there) simply adds nothing.
                    undefined[slot] = True
                else:
                    total[slot] = value if np.isnan(total[slot]) else total[slot] + value
    except (AttributeError, TypeError, ValueError) as exc:
        raise SourceUnavailable(f"{url} answered a matrix with malformed samples: {exc}") from exc
    total[undefined] = np.nan
    return total
