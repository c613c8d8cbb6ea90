"""Dynamic batching for one model replica, independent of HTTP.

Callers :meth:`~DynamicBatcher.submit` single items and get a future each. One worker thread cuts the
queue into batches and calls ``predict(items)`` once per batch, as the variants are profiled: a batch is
up to ``max_batch`` items, and it goes as soon as it is full or ``max_wait_s`` after its oldest item was
submitted, whichever comes first. So a lone request waits at most ``max_wait_s`` for company, and under
load the batches fill up and nobody waits for the timer. Each future resolves with a :class:`Served`
(the item's output and what its batch cost), or with the batch's exception: one bad batch fails exactly
the callers who were in it.

``max_batch`` can be changed while running (the adaptation loop changes a replica's batch size without a
restart); the batch being formed, and every later one, is cut at the new size. ``on_batch`` sees a
:class:`BatchRecord` per batch (size, wait of its oldest item, service time) before the batch's futures
resolve, so metrics are up to date by the time a caller has its answer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

Predict = Callable[[Sequence[Any]], Sequence[Any]]


class BatcherStopped(RuntimeError):
    """The batcher stopped (or is stopping) and will not serve this item."""


@dataclass(frozen=True)
class Served:
    """One item's output and how it was served."""

    output: Any
    batch_size: int
    """Items in the batch that served it."""
    queue_s: float
    """From :meth:`DynamicBatcher.submit` to the start of its batch's ``predict``."""
    service_s: float
    """Its batch's ``predict`` call."""


@dataclass(frozen=True)
class BatchRecord:
    """What one batch cost; passed to ``on_batch``."""

    size: int
    oldest_wait_s: float
    """Queue time of the batch's oldest item: the worst wait any of its callers had before service."""
    service_s: float
    error: str | None = None
    """The exception that failed the batch, as ``Type: message``; None when it was served."""


@dataclass(frozen=True)
class _Pending:
    item: Any
    future: Future[Served]
    submitted_at: float


class DynamicBatcher:
    """Batches submitted items for ``predict`` on one worker thread (see the module docstring).

    ``worker_init`` runs once on the worker thread before the first batch: thread-pool limits of some
    libraries (OpenMP's) are per calling thread, so that is where they must be set. :meth:`start` raises
    what it raised.
    """

    def __init__(
        self,
        predict: Predict,
        *,
        max_batch: int,
        max_wait_s: float,
        on_batch: Callable[[BatchRecord], None] | None = None,
        worker_init: Callable[[], None] | None = None,
        name: str = "batcher",
    ) -> None:
        self._predict = predict
        self._max_batch = _checked_batch(max_batch)
        self._max_wait_s = _checked_wait(max_wait_s)
        self._on_batch = on_batch
        self._worker_init = worker_init
        self._name = name
        self._queue: deque[_Pending] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    # --- configuration -------------------------------------------------------------------------------

    @property
    def max_batch(self) -> int:
        return self._max_batch

    @max_batch.setter
    def max_batch(self, value: int) -> None:
        value = _checked_batch(value)
        with self._cond:
            self._max_batch = value
            # A batch waiting for company may be full at the new size: let the worker look again.
            self._cond.notify_all()

    @property
    def max_wait_s(self) -> float:
        return self._max_wait_s

    @max_wait_s.setter
    def max_wait_s(self, value: float) -> None:
        value = _checked_wait(value)
        with self._cond:
            self._max_wait_s = value
            self._cond.notify_all()

    @property
    def queue_length(self) -> int:
        """Items submitted and not yet taken into a batch."""
        with self._cond:
            return len(self._queue)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # --- life cycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker; returns once ``worker_init`` has run (and raises what it raised)."""
        if self._thread is not None:
            raise RuntimeError("the batcher was already started")
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                if self._worker_init is not None:
                    self._worker_init()
            except BaseException as exc:
                failure.append(exc)
                return
            finally:
                ready.set()
            self._work()

        # A daemon: a predict call stuck forever must not keep the process alive after stop() gave up.
        self._thread = threading.Thread(target=run, name=self._name, daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]

    def submit(self, item: Any) -> Future[Served]:
        """Queue one item; the future resolves with its :class:`Served` or its batch's exception."""
        future: Future[Served] = Future()
        with self._cond:
            if self._stopping:
                raise BatcherStopped(f"{self._name} is stopping and takes no new items")
            self._queue.append(_Pending(item, future, time.perf_counter()))
            self._cond.notify_all()
        return future

    def stop(self, *, drain: bool = True, timeout_s: float | None = None) -> bool:
        """Take no new items; with ``drain``, serve the queued ones first (in full batches, without
        waiting for company, since none can come), else fail them with :class:`BatcherStopped`.

        Waits up to ``timeout_s`` for the worker (None: for ever). Items still queued when the wait ends
        are failed, so no caller waits for ever. True when the worker has ended.
        """
        with self._cond:
            self._stopping = True
            dropped = [] if drain else self._take_all()
            self._cond.notify_all()
        _fail(dropped, BatcherStopped(f"{self._name} stopped before this item was served"))
        if self._thread is None:
            with self._cond:
                left = self._take_all()
            _fail(left, BatcherStopped(f"{self._name} was never started"))
            return True
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            with self._cond:
                left = self._take_all()
            message = f"{self._name} stopped after {timeout_s} s with this item still queued"
            _fail(left, BatcherStopped(message))
            return False
        return True

    def __enter__(self) -> DynamicBatcher:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- the worker ----------------------------------------------------------------------------------

    def _take_all(self) -> list[_Pending]:
        taken = list(self._queue)
        self._queue.clear()
        return taken

    def _next_batch(self) -> list[_Pending] | None:
        """Block until a batch is due; None once stopping and the queue is empty."""
        with self._cond:
            while True:
                while not self._queue:
                    if self._stopping:
                        return None
                    self._cond.wait()
                # The timer starts at the oldest item's arrival, not at the end of the previous batch: an
                # item that already waited behind a busy worker goes with the next batch at once.
                deadline = self._queue[0].submitted_at + self._max_wait_s
                while len(self._queue) < self._max_batch and not self._stopping:
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                batch: list[_Pending] = []
                while self._queue and len(batch) < self._max_batch:
                    pending = self._queue.popleft()
                    # False for a future its caller cancelled (a client that went away): skip its item.
                    if pending.future.set_running_or_notify_cancel():
                        batch.append(pending)
                if batch:
                    return batch

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._serve(batch)

    def _serve(self, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        error: Exception | None = None
        outputs: Sequence[Any] = ()
        try:
            outputs = self._predict([p.item for p in batch])
            if len(outputs) != len(batch):
                raise ValueError(f"predict returned {len(outputs)} outputs for a batch of {len(batch)} items")
        except Exception as exc:
            error = exc
        service_s = time.perf_counter() - started
        record = BatchRecord(
            size=len(batch),
            oldest_wait_s=started - batch[0].submitted_at,
            service_s=service_s,
            error=None if error is None else f"{type(error).__name__}: {error}",
        )
        if self._on_batch is not None:
            try:
                self._on_batch(record)
            except Exception:
                # Metrics are not worth a caller's answer: report the hook's bug and serve on.
                log.exception("%s: on_batch failed", self._name)
        for i, pending in enumerate(batch):
            if error is not None:
                pending.future.set_exception(error)
            else:
                queue_s = started - pending.submitted_at
                pending.future.set_result(Served(outputs[i], len(batch), queue_s, service_s))


def _fail(pending: list[_Pending], error: BaseException) -> None:
    for p in pending:
        if p.future.set_running_or_notify_cancel():
            p.future.set_exception(error)


def _checked_batch(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"max_batch must be an integer >= 1, got {value!r}")
    return value


def _checked_wait(value: float) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not value >= 0:
        raise ValueError(f"max_wait_s must be a number >= 0, got {value!r}")
    return float(value)
