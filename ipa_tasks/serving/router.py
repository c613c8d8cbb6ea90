"""The pipeline's entry point: an HTTP router that takes each request through the stages in order.

Clients send ``POST /pipeline`` with ``{"input": <item>}`` and get one answer; the router calls the stage
servers' ``POST /predict`` (``{"items": [...]}`` -> ``{"outputs": [...], "variant": ..., "batch_sizes":
[...], ...}``) one stage after the other. It is the one place that sees every request, so it is also where
the load is counted (the adaptation loop's input) and where a request that can no longer meet its deadline
is given up, as IPA's router did (``reference/ipa.md`` section 5, "Request dropping").

**Item flow (the fan-out rule).** Stage 1 receives the request's input as its one item. A stage answers
one output per item it received. Before the next stage, every output that decodes to a list (a detector's
crops) becomes that many items, one per element; any other output is one item. A stage that receives no
items (a detector that found nothing) is not called. The pipeline's ``output`` is the last stage's
``outputs``: a list with one entry per item the last stage received (one entry when nothing fanned out).
Items travel as the stage servers encode them (``encode_item``/``decode_item`` of
:mod:`ipa_tasks.serving.stage_server`); the router decodes only what it must look into, the outputs of the
stages that have a stage after them, and passes everything else through unchanged. Both the codec and the
rule are parameters of :class:`Router` (``codec``, ``split``), for stages whose outputs say "many items"
another way; a pipeline whose next stage needs more than the outputs (the identifier's texts, say) gives a
``handoff(stage, items, outputs)`` instead (``ipa_tasks.demo_pipelines.handoffs``), which replaces the rule.

**Replicas.** Each stage has a replica set, changed at run time by ``PUT /stages/<stage>`` or
:meth:`Router.set_replicas`. A request goes to the replica with the fewest requests in flight, ties taken in
turn (round robin when idle). A replica taken out of the set gets no new requests, and the ones it already
has complete (draining); ``GET /stages`` and :meth:`Router.wait_drained` say when it is idle, so whoever
removed it knows when it can be stopped.

**Drops.** A request is stamped on arrival. Once it is ``drop_limit_s`` old -- checked before each stage,
while waiting for a stage (the call's timeout is what is left of the budget) and on completion -- it is
answered ``{"dropped": true, "reason": "drop-limit"}`` with HTTP 200, like IPA. A stage that cannot serve
(an HTTP error, a malformed answer, a connection failure, no replicas) is answered the same way with
reason ``stage-error``, ``stage-unreachable`` or ``no-replicas``; there is no retry, and never a hang.

**Counting.** ``GET /metrics`` has ``ipa_router_requests_total{pipeline}`` (every arrival at
``/pipeline``), ``ipa_router_dropped_total{pipeline,reason}``, ``ipa_router_latency_seconds{pipeline,
outcome}`` and ``ipa_router_in_flight{pipeline}``. The same arrivals go to the local load source's file
``<IPA_HOME>/serving/<pipeline>/requests.csv`` (:mod:`ipa_tasks.monitoring.rate_file`): a background task
appends, once a second, one row per whole unix second that has ended, zeros included; on shutdown the
current, partial second is written too, so the file's total equals the requests received.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import json
import logging
import math
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from ipa_tasks.monitoring.rate_file import append_rates
from ipa_tasks.serving.locations import request_counts_file

log = logging.getLogger(__name__)

DROP_REASONS = ("drop-limit", "no-replicas", "stage-error", "stage-unreachable")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)
# Inputs can be images; aiohttp's default limit of 1 MiB per request body would refuse a modest one.
MAX_BODY_BYTES = 64 * 1024 * 1024
_STAGE_SERVER_MODULE = "ipa_tasks.serving.stage_server"


rate_file_path = request_counts_file
"""Where the local load source reads this pipeline's per-second request counts."""


# --- the item codec ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Codec:
    """How items are written in JSON: ``encode`` turns a Python value into its JSON form, ``decode`` back."""

    encode: Callable[[Any], Any]
    decode: Callable[[Any], Any]


def _identity(value: Any) -> Any:
    return value


PASS_THROUGH = Codec(encode=_identity, decode=_identity)


def default_codec() -> Codec:
    """The stage servers' codec when :mod:`ipa_tasks.serving.stage_server` exists, else plain JSON.

    Imported here, not at module level, so the router (and its tests) work without the stage server's
    dependencies. A module that exists but fails to import is an error, not a silent fallback."""
    if importlib.util.find_spec(_STAGE_SERVER_MODULE) is None:
        return PASS_THROUGH
    module = importlib.import_module(_STAGE_SERVER_MODULE)
    return Codec(encode=module.encode_item, decode=module.decode_item)


Handoff = Callable[[str, Sequence[Any], Sequence[Any]], list[Any]]
"""(stage, its items, its outputs), decoded -> the next stage's items, decoded (replaces the rule)."""

Splitter = Callable[[Any], Sequence[Any] | None]
"""Given a decoded output, the items it fans out into, or None for an output that is one item."""


def split_lists(value: Any) -> Sequence[Any] | None:
    """The default fan-out rule: a list (or tuple) is one item per element."""
    return value if isinstance(value, list | tuple) else None


def fan_out(outputs: Sequence[Any], codec: Codec, split: Splitter = split_lists) -> list[Any]:
    """The next stage's items from a stage's outputs (see the module docstring)."""
    items: list[Any] = []
    for output in outputs:
        parts = split(codec.decode(output))
        if parts is None:
            items.append(output)  # still encoded; re-encoding would only cost time
        else:
            items.extend(codec.encode(part) for part in parts)
    return items


# --- replica sets -----------------------------------------------------------------------------------------


def normalise_replicas(replicas: Iterable[str]) -> list[str]:
    """Replica base URLs without a trailing slash; anything but distinct http(s) URLs is a ValueError."""
    urls: list[str] = []
    for raw in replicas:
        if not isinstance(raw, str):
            raise ValueError(f"a replica is a URL string, not {raw!r}")
        url = raw.strip().rstrip("/")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"a replica must be an http:// or https:// URL with a host, not {raw!r}")
        if url in urls:
            raise ValueError(f"replica {url} is listed twice")
        urls.append(url)
    return urls


class ReplicaSet:
    """One stage's replicas and the requests each has in flight, including replicas being drained.

    Not thread-safe: use it from the router's event loop only."""

    def __init__(self, stage: str, replicas: Iterable[str] = ()) -> None:
        self.stage = stage
        self._active: list[str] = []
        self._in_flight: dict[str, int] = {}
        self._turn = 0
        self.replace(replicas)

    @property
    def active(self) -> list[str]:
        return list(self._active)

    def replace(self, replicas: Iterable[str]) -> list[str]:
        """Serve from ``replicas`` from now on; returns the replicas taken out (they drain)."""
        urls = normalise_replicas(replicas)
        removed = [url for url in self._active if url not in urls]
        self._active = urls
        for url in urls:
            self._in_flight.setdefault(url, 0)
        for url in removed:
            if self._in_flight.get(url) == 0:
                del self._in_flight[url]
        return removed

    def acquire(self) -> str | None:
        """The replica for the next request (fewest in flight, ties in turn), counted in flight; None if
        the stage has no replicas."""
        if not self._active:
            return None
        start = self._turn % len(self._active)
        self._turn += 1
        rotated = self._active[start:] + self._active[:start]
        chosen = min(rotated, key=self._in_flight.__getitem__)  # min keeps the first of equals
        self._in_flight[chosen] += 1
        return chosen

    def release(self, url: str) -> None:
        self._in_flight[url] -= 1
        if self._in_flight[url] == 0 and url not in self._active:
            del self._in_flight[url]

    def in_flight(self) -> dict[str, int]:
        return dict(self._in_flight)

    def draining(self) -> dict[str, int]:
        """Replicas no longer in the set that still have requests in flight."""
        return {url: n for url, n in self._in_flight.items() if url not in self._active}


# --- metrics and the rate file ----------------------------------------------------------------------------


class RouterMetrics:
    """The router's Prometheus metrics, in a registry of their own so that several routers can share a
    process (tests, an embedded demo) without clashing in the global one."""

    def __init__(self, pipeline: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.pipeline = pipeline
        self.requests = Counter(
            "ipa_router_requests", "Requests received at /pipeline", ["pipeline"], registry=self.registry
        )
        self.dropped = Counter(
            "ipa_router_dropped",
            "Requests answered as dropped",
            ["pipeline", "reason"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "ipa_router_latency_seconds",
            "Time from arrival to answer",
            ["pipeline", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "ipa_router_in_flight", "Requests being served", ["pipeline"], registry=self.registry
        )
        # Series that exist from the start give rate() a zero instead of no data.
        self.requests.labels(pipeline)
        for reason in DROP_REASONS:
            self.dropped.labels(pipeline, reason)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class RateRecorder:
    """Counts arrivals per whole unix second and appends them to the rate file, zeros included.

    ``flush(upto)`` writes every second before ``upto`` not written yet; rows a failed write could not
    append are kept and written with the next flush."""

    def __init__(self, path: Path | None, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        self._counts: dict[int, int] = {}
        self._unwritten: dict[int, int] = {}
        self._next = int(clock())

    def count(self) -> None:
        # A wall clock stepped back must not count into a second already written.
        second = max(int(self.clock()), self._next)
        self._counts[second] = self._counts.get(second, 0) + 1

    async def flush(self, upto: int) -> None:
        for second in range(self._next, upto):
            self._unwritten[second] = self._counts.pop(second, 0)
        self._next = max(self._next, upto)
        if self.path is None or not self._unwritten:
            self._unwritten.clear()
            return
        rows = dict(self._unwritten)
        try:
            await asyncio.to_thread(append_rates, self.path, rows)
        except OSError as exc:
            log.warning("cannot append to %s (will retry): %s", self.path, exc)
            return
        for second in rows:
            self._unwritten.pop(second, None)

    async def run(self) -> None:
        """Flush once a second, just after each second ends, until cancelled."""
        while True:
            now = self.clock()
            await asyncio.sleep(int(now) + 1 - now + 0.02)
            await self.flush(int(self.clock()))

    async def close(self) -> None:
        """Write everything, the current partial second included."""
        await self.flush(int(self.clock()) + 1)


# --- the router -------------------------------------------------------------------------------------------


class _DropLog:
    """Logs a stage failure at most once per (stage, reason) every ``every_s``, with how many were not
    logged: a dead replica under load would otherwise write a line per request."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s = every_s
        self._last: dict[tuple[str | None, str], float] = {}
        self._quiet: dict[tuple[str | None, str], int] = {}

    def failure(self, stage: str | None, reason: str, detail: str) -> None:
        key, now = (stage, reason), time.monotonic()
        if now - self._last.get(key, -math.inf) < self.every_s:
            self._quiet[key] = self._quiet.get(key, 0) + 1
            return
        self._last[key] = now
        more = self._quiet.pop(key, 0)
        also = f" (and {more} more like it since the last report)" if more else ""
        log.warning("dropped a request at stage %s: %s: %s%s", stage, reason, detail, also)


class Dropped(Exception):
    """A request given up: ``reason`` is one of DROP_REASONS, ``stage`` where (None: on completion)."""

    def __init__(self, reason: str, stage: str | None, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.stage = stage
        self.detail = detail


@dataclass
class _Request:
    """One pipeline request in progress: its arrival stamp and what each stage did."""

    arrived: float
    stages: list[dict[str, Any]] = field(default_factory=list)


class Router:
    """Routes one pipeline's requests through its stages (see the module docstring).

    The Python API for whoever manages the replicas in the router's process: :meth:`set_replicas`,
    :meth:`replicas`, :meth:`draining`, :meth:`wait_drained`, :meth:`ready`; call them on the router's event
    loop. From another process use ``PUT /stages/<stage>`` and ``GET /stages`` (:class:`RouterClient`)."""

    def __init__(
        self,
        pipeline: str,
        stages: Sequence[str],
        replicas: Mapping[str, Sequence[str]] | None = None,
        *,
        drop_limit_s: float = 10.0,
        rate_file: Path | None = None,
        codec: Codec | None = None,
        split: Splitter = split_lists,
        handoff: Handoff | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        if not stages or len(set(stages)) != len(stages):
            raise ValueError(f"a pipeline needs distinct stage names, got {list(stages)}")
        if not drop_limit_s > 0:
            raise ValueError(f"drop_limit_s must be positive, got {drop_limit_s}")
        unknown = set(replicas or {}) - set(stages)
        if unknown:
            raise ValueError(f"replicas given for unknown stage(s) {', '.join(sorted(unknown))}")
        self.pipeline = pipeline
        self.stages = list(stages)
        self.drop_limit_s = drop_limit_s
        self.codec = codec if codec is not None else default_codec()
        self.split = split
        self.handoff = handoff
        self.metrics = RouterMetrics(pipeline, registry)
        self.rates = RateRecorder(rate_file)
        self._sets = {stage: ReplicaSet(stage, (replicas or {}).get(stage, ())) for stage in self.stages}
        self._drop_log = _DropLog()
        self._session: aiohttp.ClientSession | None = None
        self._writer: asyncio.Task[None] | None = None

    # -- replica sets --

    def set_replicas(self, stage: str, replicas: Sequence[str]) -> list[str]:
        """Serve ``stage`` from ``replicas`` from the next request on; returns the replicas taken out,
        whose requests in flight complete. KeyError for an unknown stage, ValueError for a bad URL."""
        removed = self._set(stage).replace(replicas)
        log.info("stage %s: replicas %s (draining %s)", stage, self._set(stage).active, removed or "none")
        return removed

    def replicas(self, stage: str) -> list[str]:
        return self._set(stage).active

    def draining(self, stage: str) -> dict[str, int]:
        return self._set(stage).draining()

    async def wait_drained(self, stage: str, timeout_s: float = 30.0) -> bool:
        """Wait until no removed replica of ``stage`` has a request in flight; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self.draining(stage):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    def ready(self) -> bool:
        """Every stage has at least one replica."""
        return all(replica_set.active for replica_set in self._sets.values())

    def status(self) -> dict[str, Any]:
        stages = [
            {
                "stage": stage,
                "replicas": replica_set.active,
                "in_flight": replica_set.in_flight(),
                "draining": replica_set.draining(),
            }
            for stage, replica_set in self._sets.items()
        ]
        return {"pipeline": self.pipeline, "ready": self.ready(), "stages": stages}

    def _set(self, stage: str) -> ReplicaSet:
        if stage not in self._sets:
            raise KeyError(f"pipeline {self.pipeline!r} has no stage {stage!r} (stages: {self.stages})")
        return self._sets[stage]

    # -- life cycle --

    async def start(self) -> None:
        """Open the client session and start writing the rate file."""
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512))
        self._writer = asyncio.create_task(self.rates.run(), name=f"rate file {self.pipeline}")

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
        await self.rates.close()
        if self._session is not None:
            await self._session.close()

    # -- requests --

    def arrive(self) -> float:
        """Count a request's arrival and return its stamp (monotonic seconds)."""
        self.metrics.requests.labels(self.pipeline).inc()
        self.rates.count()
        return time.monotonic()

    async def run(self, item: Any, arrived: float) -> dict[str, Any]:
        """The answer to one pipeline request whose input is ``item`` (encoded), stamped ``arrived``."""
        request = _Request(arrived)
        self.metrics.in_flight.labels(self.pipeline).inc()
        try:
            output = await self._through_stages(request, [item])
            self._check_age(request, None)
        except Dropped as drop:
            return self._dropped_answer(request, drop)
        finally:
            self.metrics.in_flight.labels(self.pipeline).dec()
        latency = time.monotonic() - arrived
        self.metrics.latency.labels(self.pipeline, "ok").observe(latency)
        return {"output": output, "dropped": False, "stages": request.stages, "latency_s": latency}

    async def _through_stages(self, request: _Request, items: list[Any]) -> list[Any]:
        for index, stage in enumerate(self.stages):
            self._check_age(request, stage)
            if not items:
                request.stages.append(_skipped(stage))
                continue
            outputs = await self._call_stage(request, stage, items)
            items = self._next_items(stage, items, outputs) if index + 1 < len(self.stages) else outputs
        return items

    def _next_items(self, stage: str, items: list[Any], outputs: list[Any]) -> list[Any]:
        try:
            if self.handoff is None:
                return fan_out(outputs, self.codec, self.split)
            decode, encode = self.codec.decode, self.codec.encode
            handed = self.handoff(stage, [decode(i) for i in items], [decode(o) for o in outputs])
            return [encode(item) for item in handed]
        except (ValueError, TypeError, KeyError) as exc:  # data the codec or the handoff cannot read
            raise Dropped("stage-error", stage, f"cannot read the stage's outputs: {exc}") from None

    def _check_age(self, request: _Request, stage: str | None) -> None:
        age = time.monotonic() - request.arrived
        if age >= self.drop_limit_s:
            where = f"before stage {stage}" if stage else "on completion"
            raise Dropped("drop-limit", stage, f"{age:.3f} s old {where} (limit {self.drop_limit_s:g} s)")

    async def _call_stage(self, request: _Request, stage: str, items: list[Any]) -> list[Any]:
        replica_set = self._sets[stage]
        url = replica_set.acquire()
        if url is None:
            raise Dropped("no-replicas", stage, f"stage {stage} has no replicas")
        started = time.monotonic()
        try:
            body = await self._post(stage, url, items, self.drop_limit_s - (started - request.arrived))
        finally:
            replica_set.release(url)
        outputs = _outputs(stage, url, body, len(items))
        request.stages.append(_stage_record(stage, url, body, time.monotonic() - started, len(items)))
        return outputs

    async def _post(self, stage: str, url: str, items: list[Any], budget_s: float) -> Any:
        assert self._session is not None, "Router.start() was not called"
        try:
            timeout = aiohttp.ClientTimeout(total=max(budget_s, 0.001))
            async with self._session.post(f"{url}/predict", json={"items": items}, timeout=timeout) as answer:
                if answer.status != 200:
                    text = (await answer.text())[:200]
                    raise Dropped("stage-error", stage, f"{url} answered HTTP {answer.status}: {text}")
                return await answer.json(content_type=None)
        except TimeoutError:
            # Waiting longer would only answer later than the drop limit allows.
            raise Dropped("drop-limit", stage, f"{url} did not answer within the drop limit") from None
        except aiohttp.ClientConnectionError as exc:
            raise Dropped("stage-unreachable", stage, f"{url}: {type(exc).__name__}: {exc}") from None
        except (aiohttp.ClientError, ValueError) as exc:
            raise Dropped("stage-error", stage, f"{url}: bad answer: {type(exc).__name__}: {exc}") from None

    def _dropped_answer(self, request: _Request, drop: Dropped) -> dict[str, Any]:
        latency = time.monotonic() - request.arrived
        self.metrics.dropped.labels(self.pipeline, drop.reason).inc()
        self.metrics.latency.labels(self.pipeline, "dropped").observe(latency)
        if drop.reason != "drop-limit":  # late requests are the load's doing, failures are news
            self._drop_log.failure(drop.stage, drop.reason, drop.detail)
        return {
            "output": None,
            "dropped": True,
            "reason": drop.reason,
            "stage": drop.stage,
            "detail": drop.detail,
            "stages": request.stages,
            "latency_s": latency,
        }


def _outputs(stage: str, url: str, body: Any, expected: int) -> list[Any]:
    outputs = body.get("outputs") if isinstance(body, dict) else None
    if not isinstance(outputs, list) or len(outputs) != expected:
        got = f"{len(outputs)} outputs" if isinstance(outputs, list) else "no 'outputs' list"
        raise Dropped("stage-error", stage, f"{url} answered {got} for {expected} item(s)")
    return outputs


def _stage_record(stage: str, url: str, body: dict[str, Any], seconds: float, items: int) -> dict[str, Any]:
    """What served a request at one stage; ``batch_size`` is the largest batch its items were part of."""
    sizes = body.get("batch_sizes")
    numeric = [s for s in sizes if isinstance(s, int | float)] if isinstance(sizes, list) else []
    return {
        "stage": stage,
        "variant": body.get("variant"),
        "replica": url,
        "seconds": seconds,
        "batch_size": max(numeric) if numeric else None,
        "batch_sizes": sizes,
        "items": items,
        "queue_s": body.get("queue_s"),
        "service_s": body.get("service_s"),
    }


def _skipped(stage: str) -> dict[str, Any]:
    return {"stage": stage, "variant": None, "replica": None, "seconds": 0.0, "batch_size": None, "items": 0}


# --- HTTP -------------------------------------------------------------------------------------------------


def create_app(router: Router) -> web.Application:
    """The router's aiohttp application; starting it starts the router, cleaning it up closes it."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    handlers = _Handlers(router)
    app.router.add_post("/pipeline", handlers.pipeline)
    app.router.add_get("/stages", handlers.stages)
    app.router.add_put("/stages/{stage}", handlers.put_stage)
    app.router.add_get("/healthz", handlers.healthz)
    app.router.add_get("/readyz", handlers.readyz)
    app.router.add_get("/metrics", handlers.metrics)

    async def life_cycle(_: web.Application) -> AsyncIterator[None]:
        await router.start()
        yield
        await router.close()

    app.cleanup_ctx.append(life_cycle)
    return app


class _Handlers:
    def __init__(self, router: Router) -> None:
        self.router = router

    async def pipeline(self, request: web.Request) -> web.Response:
        arrived = self.router.arrive()
        try:
            body = await request.json()
        except ValueError:
            return _error(400, 'the body must be JSON: {"input": ...}')
        if not isinstance(body, dict) or "input" not in body:
            return _error(400, "the body must be a JSON object with an 'input'")
        return web.json_response(await self.router.run(body["input"], arrived))

    async def stages(self, _: web.Request) -> web.Response:
        return web.json_response(self.router.status())

    async def put_stage(self, request: web.Request) -> web.Response:
        stage = request.match_info["stage"]
        if stage not in self.router.stages:
            return _error(404, f"no stage {stage!r}; stages: {', '.join(self.router.stages)}")
        try:
            body = await request.json()
            replicas = body["replicas"]
            if not isinstance(replicas, list):
                raise ValueError("'replicas' must be a list of URLs")
            removed = self.router.set_replicas(stage, replicas)
        except (ValueError, KeyError, TypeError) as exc:
            return _error(400, f'expected {{"replicas": ["http://host:port", ...]}}: {exc}')
        answer = {
            "stage": stage,
            "replicas": self.router.replicas(stage),
            "removed": removed,
            "draining": self.router.draining(stage),
        }
        return web.json_response(answer)

    async def healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def readyz(self, _: web.Request) -> web.Response:
        status = self.router.status()
        missing = [s["stage"] for s in status["stages"] if not s["replicas"]]
        return web.json_response(
            {"ready": not missing, "without_replicas": missing}, status=503 if missing else 200
        )

    async def metrics(self, _: web.Request) -> web.Response:
        return web.Response(
            body=self.router.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@asynccontextmanager
async def serve_app(
    app: web.Application, host: str = "127.0.0.1", port: int = 0, shutdown_timeout_s: float = 10.0
) -> AsyncIterator[str]:
    """Serve ``app`` on ``host:port`` (0: a free port) until the block ends; yields its base URL. At the
    end, requests in flight get up to ``shutdown_timeout_s`` to complete."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout_s)
    await runner.setup()
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((host, port))
        await web.SockSite(runner, sock).start()
        bound = sock.getsockname()[1]
        yield f"http://{f'[{host}]' if ':' in host else host}:{bound}"
    finally:
        await runner.cleanup()
        sock.close()


# --- a client for the admin endpoints ---------------------------------------------------------------------


class RouterClient:
    """Blocking calls to a router's admin endpoints, for a process that manages replicas (the local target).

    Errors are :class:`RouterAdminError` with the router's message."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def set_replicas(self, stage: str, replicas: Sequence[str]) -> dict[str, Any]:
        """``PUT /stages/<stage>``; returns the router's answer (replicas, removed, draining)."""
        return self._call("PUT", f"/stages/{stage}", {"replicas": list(replicas)})

    def status(self) -> dict[str, Any]:
        """``GET /stages``: every stage's replicas, requests in flight and replicas draining."""
        return self._call("GET", "/stages", None)

    def wait_drained(self, stage: str, timeout_s: float = 30.0) -> bool:
        """Poll until no removed replica of ``stage`` has a request in flight; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            stages = {s["stage"]: s for s in self.status()["stages"]}
            if not stages[stage]["draining"]:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def _call(self, method: str, path: str, body: Any) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            message = exc.read().decode("utf-8", "replace")[:300]
            raise RouterAdminError(f"{method} {self.url}{path}: HTTP {exc.code}: {message}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise RouterAdminError(f"{method} {self.url}{path}: {exc}") from None


class RouterAdminError(RuntimeError):
    """An admin call to the router failed; the message says which and why."""


# --- command line -----------------------------------------------------------------------------------------


def _parse_replicas(values: Sequence[str]) -> dict[str, list[str]]:
    replicas: dict[str, list[str]] = {}
    for value in values:
        stage, sep, urls = value.partition("=")
        if not sep or not stage:
            raise ValueError(f"--replicas takes STAGE=URL[,URL...], not {value!r}")
        replicas.setdefault(stage, []).extend(url for url in urls.split(",") if url)
    return replicas


def _pipeline_and_stages(args: argparse.Namespace) -> tuple[str, list[str]]:
    if args.spec:
        from ipa_tasks.spec import load_spec, resolve_spec_path

        spec = load_spec(resolve_spec_path(args.spec))
        return spec.name, spec.stage_names
    if not (args.pipeline and args.stages):
        raise ValueError("give --spec, or --pipeline and --stages")
    return args.pipeline, [s for s in args.stages.split(",") if s]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ipa_tasks.serving.router",
        description='The pipeline\'s entry point: POST /pipeline {"input": ...} goes through every stage in '
        'order. Also PUT /stages/<stage> {"replicas": [...]}, GET /stages, /healthz, /readyz, /metrics.',
    )
    parser.add_argument("--spec", help="a pipeline spec file or shipped name: the pipeline and its stages")
    parser.add_argument("--pipeline", help="the pipeline's name (without --spec)")
    parser.add_argument("--stages", help="the stages in order, comma-separated (without --spec)")
    parser.add_argument(
        "--replicas",
        action="append",
        default=[],
        metavar="STAGE=URL[,URL...]",
        help="a stage's initial replicas (repeat per stage); more can be set at run time",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--drop-limit-s", type=float, default=10.0, help="answer older requests as dropped")
    parser.add_argument(
        "--rate-file",
        type=Path,
        help="per-second counts (default <IPA_HOME>/serving/<pipeline>/requests.csv)",
    )
    parser.add_argument("--no-rate-file", action="store_true", help="count in /metrics only")
    parser.add_argument("--log-level", default="INFO")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        pipeline, stages = _pipeline_and_stages(args)
        rate_file = None if args.no_rate_file else args.rate_file or _default_rate_file(pipeline)
        router = Router(
            pipeline,
            stages,
            _parse_replicas(args.replicas),
            drop_limit_s=args.drop_limit_s,
            rate_file=rate_file,
            handoff=handoff_for(pipeline),
        )
    except (ValueError, KeyError) as exc:
        parser.error(str(exc))
    log.info("router for %s (stages %s), rate file %s", pipeline, ", ".join(stages), rate_file or "none")
    web.run_app(create_app(router), host=args.host, port=args.port, access_log=None, print=log.info)
    return 0


def handoff_for(pipeline: str) -> Handoff | None:
    """A demo pipeline's own handoff between its stages; other pipelines follow the fan-out rule."""
    from ipa_tasks.demo_pipelines.handoffs import handoff_for as demo_handoff

    return demo_handoff(pipeline)


def _default_rate_file(pipeline: str) -> Path:
    from ipa_tasks.settings import current_settings

    return rate_file_path(current_settings().home, pipeline)


if __name__ == "__main__":
    sys.exit(main())
