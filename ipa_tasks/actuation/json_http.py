"""One JSON-over-HTTP call for the targets that speak to plain HTTP services (the local runtime's admin API,
fixed stage servers), with the standard library only: every failure is a :class:`TargetError` naming the
method and the address."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from ipa_tasks.actuation.target import TargetError


class ConnectionRefused(TargetError):
    """Nothing listens at the address (a caller may know why, and say so)."""


def call_json(method: str, url: str, body: Any, timeout_s: float) -> Any:
    """The decoded JSON answer of ``method url`` with ``body`` as JSON (None: no body)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        raise TargetError(f"{method} {url}: HTTP {exc.code}: {_message(exc)}") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ConnectionRefusedError):
            raise ConnectionRefused(f"{method} {url}: connection refused") from None
        raise TargetError(f"{method} {url}: {exc.reason}") from None
    except (OSError, ValueError) as exc:  # a timeout, a reset, an answer that is not JSON
        raise TargetError(f"{method} {url}: {type(exc).__name__}: {exc}") from None


def _message(error: urllib.error.HTTPError) -> str:
    text = error.read().decode("utf-8", "replace")
    try:
        return str(json.loads(text)["error"])
    except (ValueError, KeyError, TypeError):
        return text[:300]
