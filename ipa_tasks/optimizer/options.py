"""Per-stage options: every (variant, batch size, cores, replicas) a stage may run, with its data.

The integer program picks one option per stage. Replicas are part of the option, enumerated from the
fewest that carry the load (``n * h > lam``) up to the first count whose queueing wait is at most
``wait_resolution_s`` (see :mod:`ipa_tasks.optimizer.queueing`): beyond it a replica buys less than that
resolution of latency and adds cost. Options are then pruned by bound (:mod:`ipa_tasks.optimizer.bounds`)
and by dominance: one that is slower, costlier and no more accurate than another of the same stage can
never be in an optimal plan.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

from ipa_tasks.accuracy import objective_accuracies
from ipa_tasks.optimizer.queueing import (
    batch_formation_delay,
    erlang_b_table,
    erlang_c_from_b,
    wait_from_erlang_c,
)
from ipa_tasks.profiles import LATENCY_COLUMNS, ProfileError, variant_accuracy
from ipa_tasks.spec import PipelineSpec

WAIT_RESOLUTION_S = 1e-3
WAIT_RESOLUTION_OF_SLA = 1e-4
FEASIBILITY_TOL = 1e-12


@dataclass(frozen=True)
class Restriction:
    """What a policy pins: a variant per stage and/or a replica count per stage."""

    variants: Mapping[str, str] | None = None
    replicas: Mapping[str, int] | None = None


@dataclass(frozen=True)
class StagePoints:
    """The profiled (variant, batch, cores) points of one stage that the spec allows, one per element."""

    stage: str
    variant_names: tuple[str, ...]
    variant: np.ndarray  # index into variant_names
    batch_size: np.ndarray
    cores: np.ndarray
    model_latency_s: np.ndarray  # at the spec's latency quantile
    throughput_rps: np.ndarray  # one replica
    accuracy: np.ndarray  # raw accuracy of the variant, for reporting
    score: np.ndarray  # the value the objective's accuracy term uses
    min_replicas: int
    max_replicas: int
    load_factor: float = 1.0  # requests this stage receives per pipeline request

    def __len__(self) -> int:
        return len(self.variant)


@dataclass(frozen=True)
class FlatPoints:
    """Every stage's points in one set of arrays (stage ``s`` owns ``offsets[s]:offsets[s + 1]``).

    The per-decision work runs on these arrays in one pass instead of one pass per stage.
    """

    stages: tuple[StagePoints, ...]
    offsets: np.ndarray
    stage_of: np.ndarray
    variant: np.ndarray
    batch_size: np.ndarray
    cores: np.ndarray
    model_latency_s: np.ndarray
    throughput_rps: np.ndarray
    accuracy: np.ndarray
    score: np.ndarray
    min_replicas: np.ndarray
    max_replicas: np.ndarray
    load_factor: np.ndarray

    @classmethod
    def of(cls, stages: list[StagePoints]) -> FlatPoints:
        sizes = [len(p) for p in stages]
        stage_of = np.repeat(np.arange(len(stages)), sizes)
        return cls(
            stages=tuple(stages),
            offsets=np.concatenate(([0], np.cumsum(sizes))).astype(np.int64),
            stage_of=stage_of,
            variant=np.concatenate([p.variant for p in stages]),
            batch_size=np.concatenate([p.batch_size for p in stages]),
            cores=np.concatenate([p.cores for p in stages]),
            model_latency_s=np.concatenate([p.model_latency_s for p in stages]),
            throughput_rps=np.concatenate([p.throughput_rps for p in stages]),
            accuracy=np.concatenate([p.accuracy for p in stages]),
            score=np.concatenate([p.score for p in stages]),
            min_replicas=np.array([p.min_replicas for p in stages])[stage_of],
            max_replicas=np.array([p.max_replicas for p in stages])[stage_of],
            load_factor=np.array([p.load_factor for p in stages], dtype=float)[stage_of],
        )

    def mask(self, per_stage: list[np.ndarray]) -> np.ndarray:
        """A boolean mask over all points from each stage's local point indices."""
        mask = np.zeros(len(self.stage_of), dtype=bool)
        mask[np.concatenate([self.offsets[s] + idx for s, idx in enumerate(per_stage)])] = True
        return mask


@dataclass(frozen=True)
class StageOptions:
    """Options of one stage (struct of arrays; element ``i`` is option ``i``)."""

    stage: str
    variant_names: tuple[str, ...]
    point: np.ndarray  # index into the stage's points
    variant: np.ndarray
    batch_size: np.ndarray
    cores: np.ndarray
    replicas: np.ndarray
    model_latency_s: np.ndarray
    batch_wait_s: np.ndarray
    queue_wait_s: np.ndarray
    throughput_rps: np.ndarray
    accuracy: np.ndarray
    score: np.ndarray
    latency_s: np.ndarray  # model latency + batch formation + queueing
    changed: np.ndarray  # variant or cores differ from the running configuration
    penalty: np.ndarray  # cost, batch and change terms of the objective (weighted)
    cores_total: np.ndarray  # cores x replicas

    def __len__(self) -> int:
        return len(self.variant)

    def take(self, index: np.ndarray) -> StageOptions:
        return StageOptions(
            self.stage,
            self.variant_names,
            *(getattr(self, name)[index] for name in _OPTION_ARRAYS),
        )


_OPTION_ARRAYS = tuple(f.name for f in fields(StageOptions))[2:]


def known_accuracies(spec: PipelineSpec, profile: pd.DataFrame) -> dict[tuple[str, str], float]:
    """Accuracy per (stage, variant) of the spec: the spec's value, else the profile's; unknown: absent."""
    profiled = variant_accuracy(profile)
    known = {}
    for stage in spec.stages:
        for variant in stage.variants:
            key = (stage.name, variant.name)
            value = variant.accuracy if variant.accuracy is not None else profiled.get(key)
            if value is not None:
                known[key] = value
    return known


def stage_points(
    spec: PipelineSpec,
    profile: pd.DataFrame,
    accuracies: Mapping[tuple[str, str], float],
    restriction: Restriction | None = None,
) -> list[StagePoints]:
    """The profile rows each stage may use: the spec's variants, batch sizes, cores and a policy's pin.

    ``accuracies`` is :func:`known_accuracies`; every variant of the spec needs one.
    """
    restriction = restriction or Restriction()
    column = LATENCY_COLUMNS[spec.latency_quantile]
    for stage in spec.stages:
        for variant in stage.variants:
            if (stage.name, variant.name) not in accuracies:
                raise ProfileError(
                    f"no accuracy for variant {variant.name!r} of stage {stage.name!r}: "
                    "neither the spec nor the profile gives one"
                )
    scores = objective_accuracies(spec, accuracies)

    result = []
    for stage in spec.stages:
        names = tuple(v.name for v in stage.variants)
        pinned = (restriction.variants or {}).get(stage.name)
        allowed = (pinned,) if pinned else names
        rows = profile[
            (profile["stage"] == stage.name)
            & profile["variant"].isin(allowed)
            & profile["batch_size"].isin(stage.batch_sizes)
            & profile["cores"].isin(stage.cores)
        ]
        if rows.empty:
            raise ProfileError(
                f"stage {stage.name!r}: the profile has no rows for variants {list(allowed)}, "
                f"batch sizes {stage.batch_sizes} and cores {stage.cores}"
            )
        variant_index = np.array([names.index(v) for v in rows["variant"]], dtype=np.int64)
        pinned_replicas = (restriction.replicas or {}).get(stage.name)
        result.append(
            StagePoints(
                stage=stage.name,
                variant_names=names,
                variant=variant_index,
                batch_size=rows["batch_size"].to_numpy(np.int64),
                cores=rows["cores"].to_numpy(np.int64),
                model_latency_s=rows[column].to_numpy(float),
                throughput_rps=rows["throughput_rps"].to_numpy(float),
                accuracy=np.array([accuracies[(stage.name, names[i])] for i in variant_index]),
                score=np.array([scores[(stage.name, names[i])] for i in variant_index]),
                min_replicas=pinned_replicas or stage.replicas.min,
                max_replicas=pinned_replicas or stage.replicas.max,
                load_factor=stage.load_factor,
            )
        )
    return result


def _replica_grid(
    load: np.ndarray,
    batch_size: np.ndarray,
    throughput: np.ndarray,
    min_replicas: np.ndarray,
    max_replicas: np.ndarray,
    quantile: str,
    resolution: float,
    fewest_only: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(point index, replicas, queue wait) of every option worth considering, for a flat array of points.

    ``load`` is each point's own arrival rate (the pipeline's load times its stage's load factor).

    Replicas run from the fewest that carry the load (at least the minimum) to the first count whose wait
    is within ``resolution`` (only the fewest with ``fewest_only``). One Erlang recursion serves every
    point; the waits are evaluated on a window of replica counts per point, widened until it suffices.
    """
    # Strictly more capacity than load: at n * h == load the queue never drains.
    fewest = np.where(load > 0, np.floor(load / throughput).astype(np.int64) + 1, 0)
    lo = np.maximum(fewest, min_replicas)
    feasible = np.flatnonzero(lo <= max_replicas)
    if len(feasible) == 0 or not np.any(load > 0):
        return feasible, lo[feasible], np.zeros(len(feasible))
    b, h, lo, cap = batch_size[feasible], throughput[feasible], lo[feasible], max_replicas[feasible]
    load = load[feasible]
    offered = load / h
    columns = np.arange(len(feasible))[:, None]
    width = 1 if fewest_only else math.ceil(6 * math.sqrt(offered.max()) + 6)
    while True:
        top = int(min(cap.max(), lo.max() + width - 1))
        table = erlang_b_table(offered, top)
        n = lo[:, None] + np.arange(width)[None, :]
        in_range = n <= cap[:, None]
        n = np.minimum(n, top)
        c = erlang_c_from_b(table[n, columns], n, offered[:, None])
        wait = wait_from_erlang_c(c, load[:, None], b[:, None], h[:, None], n, quantile)
        settled = (wait <= resolution) | ~in_range
        if fewest_only or np.all(settled[:, -1]) or top >= cap.max():
            break
        width *= 2
    # Keep each point's replica counts up to the first whose wait is within the resolution.
    first_settled = np.where(settled.any(axis=1), settled.argmax(axis=1), width - 1)
    keep = (np.arange(width)[None, :] <= first_settled[:, None]) & in_range & np.isfinite(wait)
    point_idx, offset = np.nonzero(keep)
    return feasible[point_idx], lo[point_idx] + offset, wait[point_idx, offset]


def expand_options(
    spec: PipelineSpec,
    points: FlatPoints,
    load_rps: float,
    current: Mapping[str, tuple[str, int]] | None = None,
    wait_resolution_s: float = WAIT_RESOLUTION_S,
    fewest_only: bool = False,
    allowed: np.ndarray | None = None,
    reachable_only: bool = True,
) -> list[StageOptions]:
    """The options of every stage at ``load_rps`` that can meet the SLA.

    An option is dropped when it misses the SLA even with every other stage at its fastest option; points
    already too slow without queueing are dropped before their replica counts are enumerated.
    ``current`` maps stage -> (variant, cores) of the running configuration. ``fewest_only`` gives one
    option per point (the fewest replicas); ``allowed`` is a mask over ``points`` to consider.
    ``reachable_only=False`` keeps options that miss the SLA with their replica count (a point may still
    reach it with more replicas).
    """
    sla = spec.sla_s
    # Replicas that buy less than this much latency are not enumerated; never coarser than the SLA allows.
    wait_resolution_s = min(wait_resolution_s, sla * WAIT_RESOLUTION_OF_SLA)
    load = load_rps * points.load_factor
    batch_wait = batch_formation_delay(load, points.batch_size)
    base = points.model_latency_s + batch_wait
    budget = sla - _others_fastest(base, points.offsets, points.stage_of)
    keep = base <= budget + FEASIBILITY_TOL
    if allowed is not None:
        keep &= allowed
    candidate = np.flatnonzero(keep)
    point, replicas, queue_wait = _replica_grid(
        load[candidate],
        points.batch_size[candidate],
        points.throughput_rps[candidate],
        points.min_replicas[candidate],
        points.max_replicas[candidate],
        spec.latency_quantile,
        wait_resolution_s,
        fewest_only,
    )
    point = candidate[point]  # ascending, so grouped by stage
    latency = base[point] + queue_wait
    stage = points.stage_of[point]
    bounds = np.searchsorted(stage, np.arange(len(points.stages) + 1))
    if reachable_only and np.all(np.diff(bounds) > 0):
        reachable = latency <= sla - _others_fastest(latency, bounds, stage) + FEASIBILITY_TOL
        point, replicas, queue_wait, latency, stage = (
            a[reachable] for a in (point, replicas, queue_wait, latency, stage)
        )
        bounds = np.searchsorted(stage, np.arange(len(points.stages) + 1))

    variant, batch, cores = points.variant[point], points.batch_size[point], points.cores[point]
    changed = np.zeros(len(point), dtype=bool)
    for s, stage_points in enumerate(points.stages):
        if current and stage_points.stage in current:
            running_variant, running_cores = current[stage_points.stage]
            names = stage_points.variant_names
            running_index = names.index(running_variant) if running_variant in names else -1
            sl = slice(bounds[s], bounds[s + 1])
            changed[sl] = (variant[sl] != running_index) | (cores[sl] != running_cores)
    weights = spec.objective
    columns = {
        "point": point - points.offsets[stage],
        "variant": variant,
        "batch_size": batch,
        "cores": cores,
        "replicas": replicas,
        "model_latency_s": points.model_latency_s[point],
        "batch_wait_s": batch_wait[point],
        "queue_wait_s": queue_wait,
        "throughput_rps": points.throughput_rps[point],
        "accuracy": points.accuracy[point],
        "score": points.score[point],
        "latency_s": latency,
        "changed": changed,
        "penalty": weights.cost_weight * cores * replicas
        + weights.batch_weight * batch
        + weights.change_penalty * changed,
        "cores_total": cores * replicas,
    }
    return [
        StageOptions(
            stage=stage_points.stage,
            variant_names=stage_points.variant_names,
            **{name: values[bounds[s] : bounds[s + 1]] for name, values in columns.items()},
        )
        for s, stage_points in enumerate(points.stages)
    ]


def _others_fastest(latency: np.ndarray, offsets: np.ndarray, stage_of: np.ndarray) -> np.ndarray:
    """For each element, the sum over the *other* stages of their smallest latency."""
    fastest = np.minimum.reduceat(latency, offsets[:-1])
    # Summed explicitly rather than total - own: an infinitely slow stage would make that inf - inf.
    others = np.array([fastest[:s].sum() + fastest[s + 1 :].sum() for s in range(len(fastest))])
    return others[stage_of]


def _dominated(score: np.ndarray, latency: np.ndarray, penalty: np.ndarray) -> np.ndarray:
    """Options another option beats or ties on all of (higher score, lower latency, lower penalty).

    Sort by (latency, penalty, -score, index): anything that dominates an option sorts before it. For
    each distinct score level, an option at that level is dominated when an earlier option with at least
    that score has a penalty no larger than its own (an exclusive running minimum).
    """
    k = len(score)
    order = np.lexsort((np.arange(k), -score, penalty, latency))
    s, p = score[order], penalty[order]
    dominated_sorted = np.zeros(k, dtype=bool)
    for level in np.unique(s):
        masked = np.where(s >= level, p, np.inf)
        earlier_min = np.concatenate(([np.inf], np.minimum.accumulate(masked)[:-1]))
        dominated_sorted |= (s == level) & (earlier_min <= p)
    dominated = np.empty(k, dtype=bool)
    dominated[order] = dominated_sorted
    return dominated


def _dominated_with_cores(
    score: np.ndarray, latency: np.ndarray, penalty: np.ndarray, cores_total: np.ndarray
) -> np.ndarray:
    """As :func:`_dominated`, with total cores as a fourth criterion (when a core budget binds)."""
    k = len(score)
    order = np.lexsort((np.arange(k), cores_total, -score, penalty, latency))
    crit = np.column_stack([-score, latency, penalty, cores_total])[order]
    dominated_sorted = np.zeros(k, dtype=bool)
    for i in range(k):
        if dominated_sorted[i]:
            continue
        dominated_sorted[i + 1 :] |= np.all(crit[i] <= crit[i + 1 :], axis=1)
    dominated = np.empty(k, dtype=bool)
    dominated[order] = dominated_sorted
    return dominated


def prune_dominated(options: list[StageOptions], with_cores: bool) -> list[StageOptions]:
    """Keep only options that no other option of the same stage dominates (ties keep the first)."""
    pruned = []
    for o in options:
        if len(o) <= 1:
            pruned.append(o)
            continue
        if with_cores:
            mask = _dominated_with_cores(o.score, o.latency_s, o.penalty, o.cores_total)
        else:
            mask = _dominated(o.score, o.latency_s, o.penalty)
        pruned.append(o.take(np.flatnonzero(~mask)))
    return pruned
