"""The stage server: one process per replica, serving one variant of one pipeline stage over HTTP.

Run ``python -m ipa_tasks.serving.stage_server`` (``--help`` for the options). Every option defaults from
the environment a stage's Deployment sets (:mod:`ipa_tasks.actuation.manifests`: ``IPA_PIPELINE``,
``IPA_STAGE``, ``IPA_VARIANT``, ``IPA_BATCH_SIZE``, ``IPA_THREADS``, ``IPA_BATCH_SIZE_FILE``), so the same
image runs any stage. The variant is resolved as the profiling job resolves it: ``--spec`` (a spec file or
a shipped pipeline's name; default: the pipeline's name), then the stage, then the variant's ``model``.

Endpoints (JSON unless said otherwise):

* ``POST /predict`` ``{"items": [...]}`` -> ``{"outputs": [...], "variant", "batch_sizes", "queue_s",
  "service_s"}`` (the last three per item). Items and outputs go through :func:`encode_item` /
  :func:`decode_item`, so numpy arrays travel as base64. Each item joins the batcher on its own, so
  concurrent requests share batches. 503 until the model is loaded, 400 for a bad body, 500 when the
  model fails (with ``error``).
* ``GET /healthz``: 200 while the process is up (liveness). ``GET /readyz``: 503 while the model loads,
  then 200 with the variant and the batch size (readiness).
* ``GET /metrics``: Prometheus text, ``ipa_stage_*`` series labelled ``pipeline, stage, variant``.
* ``POST /config`` ``{"batch_size": N}``: a new batch size, at once and without a restart. The batch-size
  file, when it exists, is re-read every second; a changed value in it is applied the same way, and at
  start it wins over ``IPA_BATCH_SIZE`` (a Kubernetes target rewrites a mounted ConfigMap, not the pod).
  A different variant is a restart by design: the process loads its model once.

The model loads on a background thread after the HTTP server is up, so liveness answers at once and
readiness turns 200 only when a warm-up batch has run. A load failure ends the process (status 1), so a
Deployment shows a crashing pod rather than one that is never ready. SIGTERM (or SIGINT) stops accepting
connections, lets in-flight requests finish (bounded by ``--drain-timeout-s``) and exits 0. The default
address is 127.0.0.1; a pod must listen on all interfaces (``--host 0.0.0.0`` or ``IPA_HOST=0.0.0.0``).

For a local process target and tests: :func:`server_command` builds the command line,
:func:`wait_until_ready` waits for readiness (or reports the process's death).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.exposition import choose_encoder
from threadpoolctl import threadpool_limits

from ipa_tasks.actuation.manifests import (
    ENV_BATCH,
    ENV_BATCH_FILE,
    ENV_PIPELINE,
    ENV_STAGE,
    ENV_THREADS,
    ENV_VARIANT,
    METRICS_PORT,
)
from ipa_tasks.argument_types import int_at_least
from ipa_tasks.serving.batching import BatcherStopped, BatchRecord, DynamicBatcher, Served
from ipa_tasks.spec import SpecError, StageSpec, VariantSpec, load_spec, resolve_spec_path
from ipa_tasks.variants import LoadedVariant, load_variant

MODULE = "ipa_tasks.serving.stage_server"
ENV_SPEC, ENV_HOST, ENV_PORT = "IPA_SPEC", "IPA_HOST", "IPA_PORT"
"""Not set by the Deployment today: the spec defaults to the shipped one named ``IPA_PIPELINE``; a pod
must listen on all interfaces (``IPA_HOST=0.0.0.0`` or ``--host 0.0.0.0``)."""
DEFAULT_HOST = "127.0.0.1"
DEFAULT_MAX_WAIT_MS = 5.0
BATCH_FILE_POLL_S = 1.0
MAX_BODY_BYTES = 64 * 1024 * 1024  # a batch of detector strips is a few MB of base64
EXIT_LOAD_FAILED, EXIT_BAD_INPUT = 1, 2
NDARRAY_KEY = "__ndarray__"
LABELS = ("pipeline", "stage", "variant")
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# Demo batches take 0.2-30 ms: the default buckets (from 5 ms) would put most of them in one bucket.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

log = logging.getLogger(MODULE)


# --- the JSON codec of items and outputs ------------------------------------------------------------------


def encode_item(value: Any) -> Any:
    """A stage's input or output as JSON-ready data.

    numpy arrays become ``{"__ndarray__": {"dtype", "shape", "data"}}`` (``data``: the C-order bytes in
    base64; ``dtype`` with its byte order, e.g. ``<f4``), numpy scalars Python scalars, dataclasses (a
    detector's ``Detections``, its ``Box``es) dicts of their fields, tuples lists; dicts (with str keys),
    lists, str, int, float, bool and None stay as they are, recursively. Anything else is a TypeError.
    """
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise TypeError("cannot encode a numpy array of Python objects")
        data = base64.b64encode(np.ascontiguousarray(value).tobytes()).decode("ascii")
        return {NDARRAY_KEY: {"dtype": value.dtype.str, "shape": list(value.shape), "data": data}}
    if isinstance(value, np.generic):
        return value.item()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode_item(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        if not all(isinstance(key, str) for key in value):
            raise TypeError("cannot encode a dict whose keys are not all strings")
        return {key: encode_item(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [encode_item(item) for item in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"cannot encode a {type(value).__name__} as JSON")


def decode_item(value: Any) -> Any:
    """The inverse of :func:`encode_item`, as far as JSON allows: arrays come back as (writable) numpy
    arrays, dataclasses as dicts and tuples as lists. A malformed array is a ValueError."""
    if isinstance(value, dict):
        if set(value) == {NDARRAY_KEY}:
            return _decode_array(value[NDARRAY_KEY])
        return {key: decode_item(item) for key, item in value.items()}
    if isinstance(value, list):
        return [decode_item(item) for item in value]
    return value


def _decode_array(encoded: Any) -> np.ndarray:
    try:
        dtype = np.dtype(encoded["dtype"])
        shape = tuple(int(n) for n in encoded["shape"])
        data = base64.b64decode(encoded["data"], validate=True)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed {NDARRAY_KEY} (needs dtype, shape and base64 data): {exc}") from None
    if dtype.hasobject:
        raise ValueError(f"{NDARRAY_KEY}: dtype {dtype} holds Python objects")
    try:
        # A copy: frombuffer's array is read-only, and a model may normalise its input in place.
        return np.frombuffer(data, dtype=dtype).reshape(shape).copy()
    except ValueError as exc:
        raise ValueError(
            f"{NDARRAY_KEY}: {len(data)} bytes do not make {dtype} {list(shape)}: {exc}"
        ) from None


# --- settings ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSettings:
    pipeline: str
    stage: str
    variant: str
    spec: str
    batch_size: int
    threads: int
    host: str
    port: int
    max_wait_s: float
    batch_size_file: Path | None
    drain_timeout_s: float
    warmup_items: int


_positive_int = int_at_least(1)


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number")
    return value


def build_parser(env: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The command line; every default comes from ``env`` (default: this process's environment)."""
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(
        prog=f"python -m {MODULE}",
        description="Serve one variant of one pipeline stage over HTTP with dynamic batching, health and "
        "readiness endpoints and Prometheus metrics. Options default from the environment of a stage's "
        "Deployment.",
    )

    def from_env(
        flag: str, variable: str, help_text: str, fallback: str | None = None, **kwargs: Any
    ) -> None:
        # An empty variable counts as unset: a template may carry the name with no value.
        default = env.get(variable) or fallback
        where = f"env {variable}" if fallback is None else f"env {variable}, default {fallback}"
        parser.add_argument(
            flag, default=default, required=default is None, help=f"{help_text} ({where})", **kwargs
        )

    from_env("--pipeline", ENV_PIPELINE, "pipeline name, the metrics' pipeline label")
    from_env("--stage", ENV_STAGE, "stage of the pipeline to serve")
    from_env("--variant", ENV_VARIANT, "variant of the stage to load")
    parser.add_argument(
        "--spec",
        default=env.get(ENV_SPEC) or None,
        help=f"pipeline spec YAML, or a shipped pipeline's name (env {ENV_SPEC}, default: the pipeline name)",
    )
    from_env("--batch-size", ENV_BATCH, "largest batch", "1", type=_positive_int)
    from_env("--threads", ENV_THREADS, "threads the model may use", "1", type=_positive_int)
    from_env("--host", ENV_HOST, "address to listen on; 0.0.0.0 in a pod", DEFAULT_HOST)
    from_env("--port", ENV_PORT, "port to listen on", str(METRICS_PORT), type=_port)
    parser.add_argument(
        "--max-wait-ms",
        type=_non_negative_float,
        default=DEFAULT_MAX_WAIT_MS,
        help="longest a batch waits for more items after its first one arrived, in milliseconds "
        f"(default {DEFAULT_MAX_WAIT_MS:g})",
    )
    parser.add_argument(
        "--batch-size-file",
        type=Path,
        default=env.get(ENV_BATCH_FILE) or None,
        help="file holding the batch size, re-read every second; wins over --batch-size "
        f"(env {ENV_BATCH_FILE})",
    )
    parser.add_argument(
        "--drain-timeout-s",
        type=_non_negative_float,
        default=10.0,
        help="on SIGTERM, how long in-flight requests may take to finish (default 10)",
    )
    parser.add_argument(
        "--warmup-items",
        type=int_at_least(0),
        default=1,
        help="held-out items predicted once before the server reports ready (default 1; 0: none)",
    )
    return parser


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    # argparse applies `type` to string defaults, so env values are parsed and checked like flags.
    return ServerSettings(
        pipeline=args.pipeline,
        stage=args.stage,
        variant=args.variant,
        spec=args.spec or args.pipeline,
        batch_size=args.batch_size,
        threads=args.threads,
        host=args.host,
        port=args.port,
        max_wait_s=args.max_wait_ms / 1000.0,
        batch_size_file=args.batch_size_file,
        drain_timeout_s=args.drain_timeout_s,
        warmup_items=args.warmup_items,
    )


class BadInput(ValueError):
    """The server was asked for something it cannot serve; one line and exit status 2."""


def resolve_variant(settings: ServerSettings) -> tuple[StageSpec, VariantSpec]:
    """The stage and variant of the spec, checked before anything is loaded, as the profiling job does."""
    try:
        spec = load_spec(resolve_spec_path(settings.spec))
        stage = spec.stage(settings.stage)
        variant = stage.variant(settings.variant)
    except SpecError as exc:
        raise BadInput(str(exc)) from None
    except KeyError as exc:
        raise BadInput(str(exc.args[0])) from None
    if spec.name != settings.pipeline:
        raise BadInput(f"spec {settings.spec!r} is pipeline {spec.name!r}, not {settings.pipeline!r}")
    if variant.model.kind != "python":
        raise BadInput(
            f"variant {variant.name!r} is a {variant.model.kind!r} model ({variant.model.uri}); "
            "only kind 'python' variants can be served"
        )
    return stage, variant


def parse_batch_size(text: str) -> int:
    """A batch size as written in the batch-size file or a config request; ValueError if not >= 1."""
    value = int(text.strip())
    if value < 1:
        raise ValueError(f"batch size must be >= 1, got {value}")
    return value


# --- threads -----------------------------------------------------------------------------------------------


def set_thread_environment(threads: int) -> None:
    """Thread counts for libraries not yet loaded (torch reads these when it starts its pools)."""
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[variable] = str(threads)


def pin_threads(threads: int) -> None:
    """Limit BLAS/OpenMP pools (threadpoolctl) and torch's intra-op pool, as the profiling job does.

    Called on the thread that predicts: OpenMP's limit belongs to the calling thread. Unlike the job's
    context manager it never restores: the replica runs with ``threads`` until it exits.
    """
    threadpool_limits(limits=threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


def warm_up(variant: LoadedVariant, items: int) -> int:
    """Predict ``items`` held-out inputs once (first calls pay for lazy initialisation); how many ran."""
    if items == 0:
        return 0
    inputs, _labels = variant.held_out()
    batch = [inputs[i] for i in range(min(items, len(inputs)))]
    if batch:
        variant.predict(batch)
    return len(batch)


# --- metrics -----------------------------------------------------------------------------------------------


class StageMetrics:
    """The server's Prometheus series, in a registry of its own (no process-global state)."""

    def __init__(self, pipeline: str, stage: str, variant: str) -> None:
        self.registry = CollectorRegistry()
        labels = {"pipeline": pipeline, "stage": stage, "variant": variant}

        def make(kind: type, name: str, help_text: str, **kwargs: Any) -> Any:
            return kind(name, help_text, LABELS, registry=self.registry, **kwargs).labels(**labels)

        self.requests = make(Counter, "ipa_stage_requests", "Prediction requests received")
        self.items = make(Counter, "ipa_stage_items", "Items received in prediction requests")
        self.errors = make(Counter, "ipa_stage_errors", "Prediction requests that failed")
        self.batch_size = make(Histogram, "ipa_stage_batch_size", "Items per batch", buckets=BATCH_BUCKETS)
        self.queue_length = make(Gauge, "ipa_stage_queue_length", "Items waiting for a batch")
        self.latency = make(
            Histogram,
            "ipa_stage_latency_seconds",
            "Per item: queue wait plus its batch's service time",
            buckets=LATENCY_BUCKETS,
        )
        self.service = make(
            Histogram, "ipa_stage_service_seconds", "Per batch: predict time", buckets=LATENCY_BUCKETS
        )
        self.max_batch_size = make(Gauge, "ipa_stage_max_batch_size", "Configured largest batch")

    def observe_batch(self, record: BatchRecord) -> None:
        self.batch_size.observe(record.size)
        self.service.observe(record.service_s)

    def observe_served(self, served: Sequence[Served]) -> None:
        for item in served:
            self.latency.observe(item.queue_s + item.service_s)

    def exposition(self, accept: str) -> tuple[bytes, str]:
        """The metrics encoded for the scraper's ``Accept`` header, and their content type."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


# --- the server --------------------------------------------------------------------------------------------


class StageServer:
    """One replica: the HTTP app, the loader thread, the batcher and the batch-size file watcher."""

    def __init__(self, settings: ServerSettings, stage: StageSpec, variant: VariantSpec) -> None:
        self.settings = settings
        self.stage = stage
        self.variant_spec = variant
        self.metrics = StageMetrics(settings.pipeline, settings.stage, settings.variant)
        self.batch_size = settings.batch_size
        self.batcher: DynamicBatcher | None = None
        self.stopping = False
        self.load_error: str | None = None
        self._file_text: str | None = None  # the batch-size file's content last seen
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = asyncio.Event()
        self._exit_status = 0
        self.metrics.max_batch_size.set(self.batch_size)
        self.metrics.queue_length.set_function(lambda: self.batcher.queue_length if self.batcher else 0)

    @property
    def ready(self) -> bool:
        return self.batcher is not None and not self.stopping

    # --- batch size --------------------------------------------------------------------------------

    def set_batch_size(self, value: int, reason: str) -> None:
        previous = self.batch_size
        if value == previous:
            return
        self.batch_size = value
        if self.batcher is not None:
            self.batcher.max_batch = value
        self.metrics.max_batch_size.set(value)
        note = ""
        if value not in self.stage.batch_sizes:
            note = f" (not one of the stage's profiled batch sizes {self.stage.batch_sizes})"
        log.info("batch size changed from %d to %d because %s%s", previous, value, reason, note)

    def poll_batch_file(self) -> None:
        """Apply the batch-size file's value if its content changed since the last look.

        Only a change counts: a ``POST /config`` since then stands until the file is rewritten.
        """
        path = self.settings.batch_size_file
        if path is None:
            return
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            return
        except OSError as exc:
            text = f"<unreadable: {exc}>"
        if text == self._file_text:
            return
        self._file_text = text
        try:
            value = parse_batch_size(text)
        except ValueError:
            log.warning("ignoring batch-size file %s: %r is not a batch size >= 1", path, text[:80])
            return
        self.set_batch_size(value, f"{path} says {value}")

    async def _watch_batch_file(self) -> None:
        while True:
            await asyncio.sleep(BATCH_FILE_POLL_S)
            self.poll_batch_file()

    # --- loading -----------------------------------------------------------------------------------

    def _load(self) -> None:
        """The loader thread: load, then start the batcher, whose worker pins its threads and warms up."""
        started = time.perf_counter()
        name, uri = self.variant_spec.name, self.variant_spec.model.uri
        try:
            variant = load_variant(self.variant_spec.model)
            loaded_s = time.perf_counter() - started
            log.info("loaded variant %s (%s) in %.1f s", name, uri, loaded_s)
            warmed: list[int] = []

            def init_worker() -> None:
                pin_threads(self.settings.threads)
                warmed.append(warm_up(variant, self.settings.warmup_items))

            batcher = DynamicBatcher(
                variant.predict,
                max_batch=self.batch_size,
                max_wait_s=self.settings.max_wait_s,
                on_batch=self._on_batch,
                worker_init=init_worker,
                name=f"{self.settings.stage}/{name}",
            )
            batcher.start()
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.error("loading variant %s failed: %s; exiting", name, self.load_error)
            self._request_stop(EXIT_LOAD_FAILED)
            return
        took_s = time.perf_counter() - started
        summary = f"warmed up with {warmed[0] if warmed else 0} item(s); {took_s:.1f} s after loading began"
        self._in_loop(self._on_loaded, batcher, summary)

    def _on_loaded(self, batcher: DynamicBatcher, summary: str) -> None:
        """On the event loop, where every batch-size change happens, so none made while loading is lost."""
        batcher.max_batch = self.batch_size
        self.batcher = batcher
        log.info(
            "ready: variant %s, batch size %d, max wait %g ms, %d thread(s); %s",
            self.settings.variant,
            self.batch_size,
            self.settings.max_wait_s * 1000,
            self.settings.threads,
            summary,
        )

    def _on_batch(self, record: BatchRecord) -> None:
        self.metrics.observe_batch(record)
        if record.error is not None:
            log.warning("a batch of %d item(s) failed: %s", record.size, record.error)

    def _request_stop(self, status: int) -> None:
        """Thread-safe: end :meth:`run` with ``status``."""

        def stop() -> None:
            self._exit_status = max(self._exit_status, status)
            self._stop.set()

        self._in_loop(stop)

    def _in_loop(self, callback: Callable[..., None], *args: Any) -> None:
        """Run ``callback(*args)`` on the event loop, from any thread; nothing once the loop has closed
        (the process is exiting)."""
        if self._loop is None:
            return
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(callback, *args)

    # --- HTTP handlers -----------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.add_routes(
            [
                web.get("/healthz", self.healthz),
                web.get("/readyz", self.readyz),
                web.get("/metrics", self.metrics_endpoint),
                web.post("/predict", self.predict),
                web.post("/config", self.config),
            ]
        )
        return app

    def describe(self) -> dict[str, Any]:
        s = self.settings
        return {
            "pipeline": s.pipeline,
            "stage": s.stage,
            "variant": s.variant,
            "batch_size": self.batch_size,
            "max_wait_s": s.max_wait_s,
            "threads": s.threads,
            "pid": os.getpid(),
        }

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"alive": True, "pid": os.getpid()})

    async def readyz(self, request: web.Request) -> web.Response:
        if self.ready:
            return web.json_response({"ready": True, **self.describe()})
        return web.json_response(
            {"ready": False, "reason": self._not_ready_reason(), **self.describe()}, status=503
        )

    def _not_ready_reason(self) -> str:
        if self.stopping:
            return "stopping"
        if self.load_error is not None:
            return f"loading failed: {self.load_error}"
        return f"loading variant {self.settings.variant}"

    async def metrics_endpoint(self, request: web.Request) -> web.Response:
        body, content_type = self.metrics.exposition(request.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def predict(self, request: web.Request) -> web.Response:
        batcher = self.batcher
        if batcher is None or self.stopping:
            return _error(503, self._not_ready_reason())
        try:
            items = [decode_item(item) for item in _items_of(await request.json())]
        except (ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
            return _error(400, f"bad request body: {exc}")
        self.metrics.requests.inc()
        self.metrics.items.inc(len(items))
        try:
            futures = [asyncio.wrap_future(batcher.submit(item)) for item in items]
            served: list[Served] = await asyncio.gather(*futures)
        except BatcherStopped as exc:
            self.metrics.errors.inc()
            return _error(503, str(exc))
        except Exception as exc:
            self.metrics.errors.inc()
            return _error(500, f"{type(exc).__name__}: {exc}")
        self.metrics.observe_served(served)
        try:
            outputs = [encode_item(s.output) for s in served]
        except TypeError as exc:
            self.metrics.errors.inc()
            return _error(500, f"the model's output cannot be sent as JSON: {exc}")
        return web.json_response(
            {
                "outputs": outputs,
                "variant": self.settings.variant,
                "batch_sizes": [s.batch_size for s in served],
                "queue_s": [s.queue_s for s in served],
                "service_s": [s.service_s for s in served],
            }
        )

    async def config(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError as exc:
            return _error(400, f"bad request body: {exc}")
        if not isinstance(body, dict) or not body:
            return _error(400, 'expected a JSON object like {"batch_size": 8}')
        if "variant" in body and body["variant"] != self.settings.variant:
            return _error(
                409, "a variant change needs a new process: restart the replica with the new variant"
            )
        unknown = sorted(set(body) - {"batch_size", "variant"})
        if unknown:
            return _error(400, f"unknown setting(s) {', '.join(unknown)}; only batch_size changes live")
        if "batch_size" in body:
            value = body["batch_size"]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                return _error(400, f"batch_size must be an integer >= 1, got {value!r}")
            peer = request.remote or "a client"
            self.set_batch_size(value, f"POST /config from {peer} asked for it")
        return web.json_response(self.describe())

    # --- running -----------------------------------------------------------------------------------

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT (0) or a load failure (1)."""
        self._loop = asyncio.get_running_loop()
        # Before anything else: a SIGTERM from here on is a clean stop, not the default instant death.
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(sig, self._on_signal, sig)
        self.poll_batch_file()
        runner = web.AppRunner(
            self.app(), handle_signals=False, access_log=None, shutdown_timeout=self.settings.drain_timeout_s
        )
        await runner.setup()
        site = web.TCPSite(runner, self.settings.host, self.settings.port)
        await site.start()
        log.info("listening on %s; loading variant %s", _site_url(runner), self.settings.variant)
        watcher = asyncio.create_task(self._watch_batch_file())
        threading.Thread(target=self._load, name="loader", daemon=True).start()
        await self._stop.wait()
        watcher.cancel()
        await self._shut_down(runner)
        return self._exit_status

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._stop.is_set():
            return
        log.info("stopping on %s: no new connections, finishing in-flight requests", sig.name)
        self._request_stop(0)

    async def _shut_down(self, runner: web.AppRunner) -> None:
        started = time.perf_counter()
        self.stopping = True
        # Closes the listening socket, then waits (up to the drain timeout) for in-flight handlers, whose
        # items the batcher keeps serving meanwhile.
        await runner.cleanup()
        if self.batcher is not None:
            drained = await asyncio.to_thread(
                self.batcher.stop, drain=True, timeout_s=self.settings.drain_timeout_s
            )
            if not drained:
                log.warning("a batch was still running after %g s; leaving it", self.settings.drain_timeout_s)
        log.info("stopped after %.2f s", time.perf_counter() - started)


def _items_of(body: Any) -> list[Any]:
    if not isinstance(body, dict) or not isinstance(body.get("items"), list):
        raise ValueError('expected a JSON object like {"items": [...]}')
    return body["items"]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _site_url(runner: web.AppRunner) -> str:
    addresses = runner.addresses
    if not addresses:
        return "(no address)"
    host, port = addresses[0][:2]
    return f"http://{host}:{port}"


def configure_logging(pipeline: str, stage: str) -> None:
    """Plain lines on stderr: ``<time> <pipeline>/<stage> [pid]: <what happened>``."""
    handler = logging.StreamHandler(sys.stderr)
    prefix = f"%(asctime)s {pipeline}/{stage} [%(process)d]"
    handler.setFormatter(logging.Formatter(f"{prefix}: %(message)s", datefmt="%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    # aiohttp's own INFO lines (one per request) would drown the server's.
    logging.getLogger("aiohttp").setLevel(logging.WARNING)


PARENT_PID_VARIABLE = "IPA_PARENT_PID"
"""Set by a supervisor (the local runtime): the server is stopped when that process dies, however."""
_PR_SET_PDEATHSIG = 1


def stop_with_parent(environ: Mapping[str, str] = os.environ) -> bool:
    """Ask the kernel to SIGTERM this process when the supervisor named by ``IPA_PARENT_PID`` dies, even by
    SIGKILL, so that no replica outlives the runtime that routes to it. False when the supervisor is
    already gone (the caller exits). Linux only; elsewhere, and without the variable, nothing to do."""
    parent = environ.get(PARENT_PID_VARIABLE)
    if not parent or not sys.platform.startswith("linux"):
        return True
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    # The supervisor may have died between starting this process and the call above.
    return os.getppid() == int(parent)


def main(argv: Sequence[str] | None = None) -> int:
    if not stop_with_parent():
        print("stage_server: the runtime that started this server is gone; not starting", file=sys.stderr)
        return EXIT_LOAD_FAILED
    args = build_parser().parse_args(argv)
    settings = settings_from_args(args)
    try:
        stage, variant = resolve_variant(settings)
    except BadInput as exc:
        print(f"stage_server: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    configure_logging(settings.pipeline, settings.stage)
    # One `_created` gauge per series doubles what Prometheus stores and nothing here reads it. Process-wide,
    # hence here and not in StageMetrics (tests build servers' metrics in their own process).
    disable_created_metrics()
    set_thread_environment(settings.threads)
    server = StageServer(settings, stage, variant)
    try:
        return asyncio.run(server.run())
    except OSError as exc:  # the port is taken, say
        log.error("cannot serve on %s:%d: %s", settings.host, settings.port, exc)
        return EXIT_LOAD_FAILED


# --- for a local process target, the router and tests ----------------------------------------------------


def server_command(
    *,
    pipeline: str,
    stage: str,
    variant: str,
    batch_size: int,
    port: int,
    threads: int = 1,
    spec: str | Path | None = None,
    host: str = DEFAULT_HOST,
    max_wait_ms: float | None = None,
    batch_size_file: str | Path | None = None,
    python: str = sys.executable,
) -> list[str]:
    """The command line of one stage server (run it with ``subprocess.Popen``)."""
    command = [
        python, "-m", MODULE,
        "--pipeline", pipeline, "--stage", stage, "--variant", variant,
        "--batch-size", str(batch_size), "--threads", str(threads),
        "--host", host, "--port", str(port),
    ]  # fmt: skip
    if spec is not None:
        command += ["--spec", str(spec)]
    if max_wait_ms is not None:
        command += ["--max-wait-ms", str(max_wait_ms)]
    if batch_size_file is not None:
        command += ["--batch-size-file", str(batch_size_file)]
    return command


class ServerFailed(RuntimeError):
    """A stage server exited, or did not become ready in time."""


def wait_until_ready(
    base_url: str,
    *,
    timeout_s: float = 60.0,
    process: subprocess.Popen[Any] | None = None,
    poll_s: float = 0.05,
) -> dict[str, Any]:
    """Poll ``GET /readyz`` until it answers 200; return its JSON (variant, batch size, pid, ...).

    With ``process``, its exit ends the wait at once (a load failure exits with status 1). Raises
    :class:`ServerFailed` on exit or timeout, with the last answer or error seen.
    """
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    url = base_url.rstrip("/") + "/readyz"
    while True:
        if process is not None and process.poll() is not None:
            raise ServerFailed(f"the stage server at {base_url} exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=max(poll_s, 1.0)) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            last = f"{exc.code}: {exc.read().decode(errors='replace')[:200]}"
        except (OSError, ValueError) as exc:
            last = str(exc)
        if time.monotonic() >= deadline:
            raise ServerFailed(f"the stage server at {base_url} was not ready after {timeout_s:g} s ({last})")
        time.sleep(poll_s)


def free_port(host: str = DEFAULT_HOST) -> int:
    """A port nobody listens on right now (another process may take it before the server does)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    sys.exit(main())
