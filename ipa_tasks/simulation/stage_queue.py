"""One stage served as the runtime serves it: a FIFO queue in front of its replicas, dynamic batching with a
maximum wait, and the configurations that follow each other as the adaptation loop changes them.

What: :func:`serve_stage` takes the times the stage's items become ready (sorted), the epochs (each a
configuration in force from a time on, the time the change has landed), and returns when each item
finished, or NaN for an item dropped because its request was already ``drop_limit`` old when a replica
could take it (the router's check, ``ipa_tasks.serving.router``).

How a batch forms (``ipa_tasks.serving.batching``): when a replica is free and an item waits, the batch
goes as soon as ``batch_size`` items are there, or ``max_wait_s`` after its oldest item arrived, whichever
comes first, and takes every item that arrived by then (at most ``batch_size``). A new epoch rebuilds the
replicas: a variant or core change replaces them all (the new ones are ready at the epoch's start; batches
already running finish on the old ones); a replica count change keeps the earliest-free replicas, or adds
new ones ready at the epoch's start.

Why one stage at a time: the load the loop adapts to is the arrivals, which do not depend on how they are
served, so the decisions are known before the simulation, and a pipeline is its stages in sequence, each
fed by the previous one's finish times. That makes the whole simulation a few loops over the items.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ipa_tasks.actuation.config import StageConfig
from ipa_tasks.simulation.service_times import BatchCurve


@dataclass(frozen=True)
class Epoch:
    start_s: float
    config: StageConfig
    curve: BatchCurve


def _replicas_for(epoch: Epoch, previous: Epoch | None, free: list[float]) -> list[float]:
    """The replicas' free times once ``epoch`` is in force (see the module docstring)."""
    count = epoch.config.replicas
    if previous is None or (epoch.config.variant, epoch.config.cores) != (
        previous.config.variant,
        previous.config.cores,
    ):
        replicas = [epoch.start_s] * count
    else:
        kept = sorted(free)[:count]
        replicas = [max(f, epoch.start_s) for f in kept] + [epoch.start_s] * (count - len(kept))
    heapq.heapify(replicas)
    return replicas


def serve_stage(
    ready_s: np.ndarray,
    deadline_s: np.ndarray,
    epochs: Sequence[Epoch],
    normals: np.ndarray,
    max_wait_s: float,
) -> np.ndarray:
    """Finish times of the items (NaN: dropped). ``ready_s`` sorted; ``deadline_s`` per item (its request's
    arrival plus the drop limit); ``normals`` one standard normal draw per item (enough for every batch)."""
    n = len(ready_s)
    finish = np.full(n, math.nan)
    if n == 0:
        return finish
    if not epochs:
        raise ValueError("a stage needs at least one configuration")
    ready = ready_s.tolist()
    deadline = deadline_s.tolist()
    draws = normals.tolist()
    # The first batch moves on to the epoch in force then, as every later one does.
    e = 0
    free = _replicas_for(epochs[e], None, [])
    batch_size, curve = epochs[e].config.batch_size, epochs[e].curve
    i = batches = 0
    while i < n:
        replica = heapq.heappop(free)
        t0 = max(replica, ready[i])
        if e + 1 < len(epochs) and epochs[e + 1].start_s <= t0:
            heapq.heappush(free, replica)
            while e + 1 < len(epochs) and epochs[e + 1].start_s <= t0:
                e += 1
                free = _replicas_for(epochs[e], epochs[e - 1], free)
            batch_size, curve = epochs[e].config.batch_size, epochs[e].curve
            replica = heapq.heappop(free)
            t0 = max(replica, ready[i])
        if deadline[i] <= t0:  # too old for a replica to take: dropped, the replica stays free
            heapq.heappush(free, replica)
            i += 1
            continue
        last = i + batch_size - 1
        if last < n and ready[last] <= t0:
            start = t0
        else:
            full_at = ready[last] if last < n else math.inf
            start = max(t0, min(ready[i] + max_wait_s, full_at))
        j = i + 1
        while j < n and j < i + batch_size and ready[j] <= start:
            j += 1
        done = start + curve.time(j - i, draws[batches % len(draws)])
        finish[i:j] = done
        heapq.heappush(free, done)
        batches += 1
        i = j
    return finish
