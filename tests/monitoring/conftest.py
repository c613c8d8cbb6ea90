"""``prometheus``: a real HTTP server on loopback that answers ``/api/v1/query_range`` as Prometheus does
(matrix JSON, evaluated at ``start, start + step, ... <= end``, Prometheus' own parameter errors), and can be
told to misbehave; ``dead_prometheus_url``: the address of a server that has been closed."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

MAX_POINTS = 11_000  # Prometheus refuses range queries with more points per series


@dataclass
class FakePrometheus:
    """``series``: one ``{instant: value text}`` per time series; an instant absent from a series is a
    sample Prometheus does not have. ``mode`` other than ``"ok"`` makes every answer fail in one way."""

    url: str = ""
    series: list[dict[int, str]] = field(default_factory=list)
    mode: str = "ok"
    delay_s: float = 0.0
    requests: list[dict[str, str]] = field(default_factory=list)

    def answer(self, path: str, params: dict[str, str]) -> tuple[int, str, bytes]:
        """HTTP status, content type and body for one request."""
        self.requests.append(params)
        if self.delay_s:
            time.sleep(self.delay_s)
        if path != "/api/v1/query_range":
            return 404, "text/plain", b"404 page not found\n"
        if self.mode == "http-500":
            return 500, "text/plain", b"internal error\n"
        if self.mode == "not-json":
            return 200, "application/json", b"<html>login required</html>"
        if self.mode == "promql-error":
            return _error(400, "bad_data", '1:5: parse error: unexpected "}"')
        if self.mode == "error-status":
            body = {
                "status": "error",
                "errorType": "execution",
                "error": "query timed out in query execution",
            }
            return 200, "application/json", json.dumps(body).encode()
        try:
            start, end, step = (float(params[name]) for name in ("start", "end", "step"))
        except (KeyError, ValueError):
            return _error(400, "bad_data", 'invalid parameter "start": cannot parse to a valid timestamp')
        if end < start:
            return _error(400, "bad_data", "end timestamp must not be before start time")
        if step <= 0:
            return _error(400, "bad_data", "zero or negative query resolution step widths are not accepted")
        if (end - start) / step > MAX_POINTS:
            return _error(400, "bad_data", "exceeded maximum resolution of 11,000 points per timeseries")
        instants = [start + k * step for k in range(math.floor((end - start) / step) + 1)]
        if self.mode == "vector":
            data: dict[str, Any] = {"resultType": "vector", "result": []}
        else:
            result = []
            for number, values in enumerate(self.series):
                points = [
                    [_timestamp(t), values[round(t)]]
                    for t in instants
                    if t == round(t) and round(t) in values
                ]
                if points:  # Prometheus leaves out series with no point in the range
                    result.append({"metric": {"pod": f"router-{number}"}, "values": points})
            data = {"resultType": "matrix", "result": result}
        return 200, "application/json", json.dumps({"status": "success", "data": data}).encode()


def _error(status: int, kind: str, message: str) -> tuple[int, str, bytes]:
    return (
        status,
        "application/json",
        json.dumps({"status": "error", "errorType": kind, "error": message}).encode(),
    )


def _timestamp(t: float) -> float | int:
    return int(t) if t == int(t) else round(t, 3)


def _serve(fake: FakePrometheus) -> tuple[ThreadingHTTPServer, threading.Thread]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            params = {name: values[-1] for name, values in parse_qs(parts.query).items()}
            status, content_type, body = fake.answer(parts.path, params)
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                pass  # the client gave up (the timeout test)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    # A short poll interval: shutdown waits for it, once per test.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    return server, thread


def _stop(server: ThreadingHTTPServer, thread: threading.Thread) -> None:
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def prometheus() -> Iterator[FakePrometheus]:
    fake = FakePrometheus()
    server, thread = _serve(fake)
    yield fake
    _stop(server, thread)


@pytest.fixture
def dead_prometheus_url() -> str:
    fake = FakePrometheus()
    _stop(*_serve(fake))
    return fake.url
