"""One stage's queue, with service times that have no spread, so each finish time can be worked out by
hand: FIFO over the replicas, batches that go full or after the wait, drops at the deadline, and a new
configuration that serves only from when it lands."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ipa_tasks.actuation.config import StageConfig
from ipa_tasks.simulation.service_times import BatchCurve
from ipa_tasks.simulation.stage_queue import Epoch, serve_stage

FAR = 1e9


def curve(per_batch: float, per_item: float = 0.0, largest: int = 8) -> BatchCurve:
    return BatchCurve([per_batch + n * per_item for n in range(largest + 1)], [0.0] * (largest + 1))


def serve(ready, epochs, max_wait_s=0.0, deadline=None):
    ready = np.asarray(ready, dtype=float)
    deadline = np.full(len(ready), FAR) if deadline is None else np.asarray(deadline, dtype=float)
    return serve_stage(ready, deadline, epochs, np.zeros(len(ready)), max_wait_s)


def epoch(start, batch=1, replicas=1, variant="v", service=None):
    return Epoch(start, StageConfig(variant, batch, 1, replicas), service or curve(1.0))


def test_one_replica_serves_in_arrival_order_and_two_share_the_queue():
    assert serve([0, 0, 0], [epoch(0)]).tolist() == [1, 2, 3]
    assert serve([0, 0, 0], [epoch(0, replicas=2)]).tolist() == [1, 1, 2]


def test_a_batch_goes_when_full_or_after_the_wait_and_never_exceeds_the_batch_size():
    four = [epoch(0, batch=4, service=curve(1.0))]
    # Two items, wait 0.5: the batch goes at 0.5 with both.
    assert serve([0, 0.1], four, max_wait_s=0.5).tolist() == [1.5, 1.5]
    # Four at once: full, it goes at once; the fifth waits for the replica and then its own wait.
    assert serve([0, 0, 0, 0, 0.2], four, max_wait_s=0.5).tolist() == [1, 1, 1, 1, 2]
    # Full before the wait ends: it goes when the fourth arrives.
    assert serve([0, 0.1, 0.2, 0.3], four, max_wait_s=0.5).tolist() == pytest.approx([1.3] * 4)


def test_an_item_too_old_when_a_replica_could_take_it_is_dropped_and_costs_nothing():
    finish = serve([0, 0, 0], [epoch(0)], deadline=[FAR, 0.5, FAR])
    assert finish[0] == 1 and math.isnan(finish[1]) and finish[2] == 2


def test_a_new_variant_serves_from_when_it_lands_and_running_batches_finish_on_the_old():
    slow, fast = curve(1.0), curve(0.1)
    epochs = [epoch(0, variant="slow", service=slow), epoch(2.5, variant="fast", service=fast)]
    # 0->1, 1->2, 2->3 on the slow one (started before 2.5, it finishes there); the fast one is there at 2.5.
    assert serve([0, 0, 0, 0, 0], epochs).tolist() == pytest.approx([1, 2, 3, 2.6, 2.7])


def test_more_replicas_of_the_same_variant_join_when_they_land():
    epochs = [epoch(0), epoch(1.5, replicas=3)]
    assert serve([0] * 5, epochs).tolist() == pytest.approx([1, 2, 2.5, 2.5, 3])
