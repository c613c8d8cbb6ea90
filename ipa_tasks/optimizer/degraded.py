"""The plan for a load no configuration can serve within the SLA: the highest-throughput plan.

The pipeline's throughput is that of its slowest stage, so the degraded plan maximises
``min over stages of replicas * throughput`` under the replica bounds (and the core budget, if any). Every
other stage then takes the cheapest option that keeps up with that bottleneck (ties: lower latency, then
higher accuracy), so no core is spent where it cannot raise throughput.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ipa_tasks.optimizer.options import StagePoints
from ipa_tasks.optimizer.queueing import batch_formation_delay, queue_wait


@dataclass(frozen=True)
class DegradedChoice:
    point: tuple[int, ...]  # index into each stage's points
    replicas: tuple[int, ...]
    capacity_rps: float
    bottleneck: str
    core_budget_binds: bool


def _candidates(points: StagePoints) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(point index, replicas, capacity, total cores) of every allowed replica count of every point.

    Capacity is in pipeline requests per second: the stage's own throughput over its load factor.
    """
    replicas = np.arange(points.min_replicas, points.max_replicas + 1)
    point_idx = np.repeat(np.arange(len(points)), len(replicas))
    n = np.tile(replicas, len(points))
    capacity = n * points.throughput_rps[point_idx] / points.load_factor
    return point_idx, n, capacity, n * points.cores[point_idx]


def _cheapest_reaching(points: StagePoints, target: float) -> tuple[int, int, int] | None:
    """(point, replicas, total cores) of the cheapest candidate with capacity >= target, or None."""
    point_idx, n, capacity, cores = _candidates(points)
    ok = np.flatnonzero(capacity >= target * (1 - 1e-12))
    if len(ok) == 0:
        return None
    # Cheapest, then fastest, then most accurate, then the first in profile order.
    order = np.lexsort(
        (ok, -points.accuracy[point_idx[ok]], points.model_latency_s[point_idx[ok]], cores[ok])
    )
    best = ok[order[0]]
    return int(point_idx[best]), int(n[best]), int(cores[best])


def highest_throughput_choice(stage_points: list[StagePoints], max_total_cores: int | None) -> DegradedChoice:
    best_capacity = [float((p.max_replicas * p.throughput_rps).max()) / p.load_factor for p in stage_points]
    target = min(best_capacity)
    core_budget_binds = False

    def total_cores(t: float) -> int | None:
        picks = [_cheapest_reaching(p, t) for p in stage_points]
        return None if any(p is None for p in picks) else sum(p[2] for p in picks)

    if max_total_cores is not None and (total_cores(target) or 0) > max_total_cores:
        core_budget_binds = True
        levels = np.unique(np.concatenate([_candidates(p)[2] for p in stage_points]))
        levels = levels[levels <= target]
        lo, hi = 0, len(levels) - 1  # find the largest level whose cheapest plan fits the budget
        target = 0.0
        while lo <= hi:
            mid = (lo + hi) // 2
            needed = total_cores(float(levels[mid]))
            if needed is not None and needed <= max_total_cores:
                target, lo = float(levels[mid]), mid + 1
            else:
                hi = mid - 1
        if target == 0.0:  # not even the smallest plan fits: take it anyway, it is the least over budget
            target = float(levels[0])
    picks = [_cheapest_reaching(p, target) for p in stage_points]
    capacities = [
        float(n * p.throughput_rps[i]) / p.load_factor
        for p, (i, n, _) in zip(stage_points, picks, strict=True)
    ]
    bottleneck = stage_points[int(np.argmin(capacities))].stage
    return DegradedChoice(
        point=tuple(p[0] for p in picks),
        replicas=tuple(p[1] for p in picks),
        capacity_rps=min(capacities),
        bottleneck=bottleneck,
        core_budget_binds=core_budget_binds,
    )


def fastest_latency_s(stage_points: list[StagePoints], load_rps: float, quantile: str) -> float:
    """The lowest end-to-end latency any plan reaches at ``load_rps`` (each stage at its most replicas)."""
    total = 0.0
    for p in stage_points:
        load = load_rps * p.load_factor
        latency = (
            p.model_latency_s
            + batch_formation_delay(load, p.batch_size)
            + queue_wait(load, p.batch_size, p.throughput_rps, p.max_replicas, quantile)
        )
        total += float(latency.min())
    return total
