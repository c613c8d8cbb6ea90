"""The dynamic batcher on its own: batch limits under concurrency, the max-wait bound, full batches going at
once, live batch-size changes, errors reaching every caller of a batch, and stopping.

Timing bounds are generous (the machine is shared): they tell "waited for the timer" from "did not".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from ipa_tasks.serving.batching import BatcherStopped, BatchRecord, DynamicBatcher, Served

SLACK_S = 1.0
"""Scheduling noise allowed on a shared machine, far below the 10 s timers the tests tell apart."""
LONG_WAIT_S = 10.0


class Recorder:
    """A predict that doubles its items, records each batch and can be held at a gate."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.batches: list[list[Any]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, items: Sequence[Any]) -> list[Any]:
        with self.lock:
            self.batches.append(list(items))
        self.entered.set()
        self.gate.wait()
        if self.delay_s:
            time.sleep(self.delay_s)
        if any(item == "boom" for item in items):
            raise ValueError("boom in the batch")
        return [item * 2 for item in items]

    @property
    def sizes(self) -> list[int]:
        with self.lock:
            return [len(b) for b in self.batches]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def records() -> list[BatchRecord]:
    return []


def started(predict: Recorder, records: list[BatchRecord] | None = None, **kwargs: Any) -> DynamicBatcher:
    batcher = DynamicBatcher(predict, on_batch=None if records is None else records.append, **kwargs)
    batcher.start()
    return batcher


@pytest.fixture
def stopper() -> Iterator[list[DynamicBatcher]]:
    """Batchers to stop after the test, so a failing test leaves no worker behind."""
    batchers: list[DynamicBatcher] = []
    yield batchers
    for batcher in batchers:
        batcher.stop(drain=False, timeout_s=5)


def results(futures: Sequence[Future[Served]], timeout_s: float = LONG_WAIT_S) -> list[Served]:
    return [f.result(timeout=timeout_s) for f in futures]


def test_batches_never_exceed_the_limit_under_concurrent_submission(
    stopper: list[DynamicBatcher], records: list[BatchRecord]
) -> None:
    predict = Recorder(delay_s=0.002)
    batcher = started(predict, records, max_batch=5, max_wait_s=0.005)
    stopper.append(batcher)

    def submit_many(offset: int) -> list[tuple[int, Future[Served]]]:
        return [(offset + i, batcher.submit(offset + i)) for i in range(50)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        submitted = [pair for chunk in pool.map(submit_many, range(0, 800, 100)) for pair in chunk]
    for item, future in submitted:
        served = future.result(timeout=LONG_WAIT_S)
        assert served.output == item * 2, "every caller gets the output of its own item"
        assert 1 <= served.batch_size <= 5
    assert max(predict.sizes) <= 5
    assert sum(predict.sizes) == 400
    assert max(predict.sizes) > 1, "400 items from 8 threads must share some batches"
    assert [r.size for r in records] == predict.sizes


def test_a_lone_item_waits_at_most_max_wait_plus_service(stopper: list[DynamicBatcher]) -> None:
    predict = Recorder(delay_s=0.05)
    max_wait_s = 0.2
    batcher = started(predict, max_batch=8, max_wait_s=max_wait_s)
    stopper.append(batcher)
    begun = time.perf_counter()
    served = batcher.submit(21).result(timeout=LONG_WAIT_S)
    elapsed = time.perf_counter() - begun
    assert served.output == 42 and served.batch_size == 1
    # It waited for company (the timer), but not much longer than the timer plus its own service.
    assert served.queue_s >= max_wait_s * 0.9
    assert elapsed <= max_wait_s + 0.05 + SLACK_S
    assert served.service_s >= 0.05


def test_a_full_batch_goes_without_waiting(stopper: list[DynamicBatcher], recorder: Recorder) -> None:
    batcher = started(recorder, max_batch=4, max_wait_s=LONG_WAIT_S)
    stopper.append(batcher)
    begun = time.perf_counter()
    served = results([batcher.submit(i) for i in range(4)])
    assert time.perf_counter() - begun < SLACK_S, "a full batch must not wait for the 10 s timer"
    assert [s.output for s in served] == [0, 2, 4, 6]
    assert recorder.sizes == [4]


def test_lowering_max_batch_cuts_the_batch_being_formed(
    stopper: list[DynamicBatcher], recorder: Recorder
) -> None:
    batcher = started(recorder, max_batch=8, max_wait_s=LONG_WAIT_S)
    stopper.append(batcher)
    futures = [batcher.submit(i) for i in range(3)]
    time.sleep(0.1)
    assert not any(f.done() for f in futures), "3 of 8: the batch waits for company"
    begun = time.perf_counter()
    batcher.max_batch = 3
    results(futures)
    assert time.perf_counter() - begun < SLACK_S, "at the new size the waiting batch is full"
    assert recorder.sizes == [3]


def test_a_live_change_of_max_batch_applies_to_the_next_batches(
    stopper: list[DynamicBatcher], recorder: Recorder
) -> None:
    batcher = started(recorder, max_batch=8, max_wait_s=0.0)
    stopper.append(batcher)
    recorder.gate.clear()
    first = batcher.submit(0)
    assert recorder.entered.wait(LONG_WAIT_S), "the worker takes the first item and is held in predict"
    queued = [batcher.submit(i) for i in range(1, 7)]
    assert batcher.queue_length == 6
    batcher.max_batch = 2
    assert batcher.max_batch == 2
    recorder.gate.set()
    served = results([first, *queued])
    assert recorder.sizes == [1, 2, 2, 2]
    assert [s.batch_size for s in served] == [1, 2, 2, 2, 2, 2, 2]
    batcher.max_batch = 6
    assert [s.batch_size for s in results([batcher.submit(i) for i in range(6)])] == [6] * 6


def test_an_exception_reaches_every_caller_of_its_batch_and_only_them(
    stopper: list[DynamicBatcher], recorder: Recorder, records: list[BatchRecord]
) -> None:
    batcher = started(recorder, records, max_batch=3, max_wait_s=LONG_WAIT_S)
    stopper.append(batcher)
    bad = [batcher.submit(item) for item in ("a", "boom", "c")]
    for future in bad:
        with pytest.raises(ValueError, match="boom in the batch"):
            future.result(timeout=LONG_WAIT_S)
    assert records[0].error == "ValueError: boom in the batch"
    good = results([batcher.submit(item) for item in ("x", "y", "z")])
    assert [s.output for s in good] == ["xx", "yy", "zz"], "the worker serves on after a failed batch"
    assert records[1].error is None


def test_a_predict_that_returns_the_wrong_count_fails_the_batch(stopper: list[DynamicBatcher]) -> None:
    batcher = DynamicBatcher(lambda items: [0], max_batch=2, max_wait_s=LONG_WAIT_S)
    batcher.start()
    stopper.append(batcher)
    futures = [batcher.submit(1), batcher.submit(2)]
    for future in futures:
        with pytest.raises(ValueError, match="1 outputs for a batch of 2 items"):
            future.result(timeout=LONG_WAIT_S)


def test_each_batch_is_recorded_with_its_oldest_wait_and_service_time(
    stopper: list[DynamicBatcher], records: list[BatchRecord]
) -> None:
    predict = Recorder(delay_s=0.05)
    batcher = started(predict, records, max_batch=2, max_wait_s=LONG_WAIT_S)
    stopper.append(batcher)
    first = batcher.submit(1)
    time.sleep(0.1)
    second = batcher.submit(2)
    one, two = results([first, second])
    (record,) = records
    assert record.size == 2 and record.error is None
    assert record.service_s >= 0.05 and one.service_s == two.service_s == record.service_s
    assert record.oldest_wait_s == pytest.approx(one.queue_s)
    assert one.queue_s >= 0.1 > two.queue_s, "the batch started when the second item made it full"


def test_stop_drains_queued_items_without_waiting_for_the_timer(recorder: Recorder) -> None:
    batcher = started(recorder, max_batch=2, max_wait_s=LONG_WAIT_S)
    futures = [batcher.submit(i) for i in range(5)]
    begun = time.perf_counter()
    assert batcher.stop(drain=True, timeout_s=LONG_WAIT_S)
    assert time.perf_counter() - begun < SLACK_S
    assert [s.output for s in results(futures, timeout_s=0)] == [0, 2, 4, 6, 8]
    assert not batcher.running
    with pytest.raises(BatcherStopped):
        batcher.submit(9)


def test_stop_without_drain_fails_queued_items_with_a_clear_error(recorder: Recorder) -> None:
    batcher = started(recorder, max_batch=4, max_wait_s=0.0)
    recorder.gate.clear()
    in_flight = batcher.submit(1)
    assert recorder.entered.wait(LONG_WAIT_S)
    queued = [batcher.submit(i) for i in range(2, 5)]
    stopping = threading.Thread(target=batcher.stop, kwargs={"drain": False, "timeout_s": LONG_WAIT_S})
    stopping.start()
    for future in queued:
        with pytest.raises(BatcherStopped, match="stopped before this item was served"):
            future.result(timeout=LONG_WAIT_S)
    recorder.gate.set()
    stopping.join(LONG_WAIT_S)
    assert in_flight.result(timeout=0).output == 2, "the batch in flight still completes"


def test_stop_gives_up_on_a_stuck_batch_and_fails_what_is_queued(recorder: Recorder) -> None:
    batcher = started(recorder, max_batch=1, max_wait_s=0.0)
    recorder.gate.clear()
    stuck = batcher.submit(1)
    assert recorder.entered.wait(LONG_WAIT_S)
    queued = batcher.submit(2)
    assert batcher.stop(drain=True, timeout_s=0.2) is False
    with pytest.raises(BatcherStopped, match="still queued"):
        queued.result(timeout=0)
    recorder.gate.set()
    assert stuck.result(timeout=LONG_WAIT_S).output == 2


def test_a_cancelled_item_is_skipped(stopper: list[DynamicBatcher], recorder: Recorder) -> None:
    batcher = started(recorder, max_batch=3, max_wait_s=LONG_WAIT_S)
    stopper.append(batcher)
    gone = batcher.submit(100)
    assert gone.cancel(), "a caller may give up on a queued item"
    kept = [batcher.submit(i) for i in range(3)]
    assert [s.output for s in results(kept)] == [0, 2, 4]
    assert recorder.batches == [[0, 1, 2]]


def test_worker_init_runs_on_the_worker_thread_and_its_failure_is_raised_by_start() -> None:
    seen: list[str] = []
    batcher = DynamicBatcher(
        lambda items: [threading.current_thread().name for _ in items],
        max_batch=1,
        max_wait_s=0.0,
        worker_init=lambda: seen.append(threading.current_thread().name),
        name="worker-7",
    )
    with batcher:
        assert batcher.submit(0).result(timeout=LONG_WAIT_S).output == "worker-7"
    assert seen == ["worker-7"]

    def broken() -> None:
        raise RuntimeError("cannot pin threads")

    with pytest.raises(RuntimeError, match="cannot pin threads"):
        DynamicBatcher(lambda items: list(items), max_batch=1, max_wait_s=0.0, worker_init=broken).start()


@pytest.mark.parametrize(("max_batch", "max_wait_s"), [(0, 0.0), (2.5, 0.0), (True, 0.0), (1, -1.0)])
def test_bad_settings_are_refused(max_batch: Any, max_wait_s: Any) -> None:
    with pytest.raises(ValueError):
        DynamicBatcher(lambda items: list(items), max_batch=max_batch, max_wait_s=max_wait_s)
    batcher = DynamicBatcher(lambda items: list(items), max_batch=1, max_wait_s=0.0)
    with pytest.raises(ValueError):
        batcher.max_batch = 0
