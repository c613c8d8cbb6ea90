"""Per-stage options: every (variant, batch size, cores, replicas) a stage may run, with its data.

The integer program picks one option per stage. Replicas are part of the option, enumerated from the
fewest that carry the load (``n * h > lam``) upward for as long as one more replica still shortens the
queueing wait by more than ``wait_resolution_s`` (see :mod:`ipa_tasks.optimizer.queueing`); a replica
beyond that only adds cost. Options are then pruned: one that is slower, costlier and no more accurate
than another of the same stage can never be in an optimal plan.
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

    def __len__(self) -> int:
        return len(self.variant)


@dataclass(frozen=True)
class StageOptions:
    """Options of one stage (struct of arrays; element ``i`` is option ``i``)."""

    stage: str
    variant_names: tuple[str, ...]
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
    changed: np.ndarray  # variant or cores differ from the running configuration
    penalty: np.ndarray  # cost, batch and change terms of the objective (weighted)

    def __len__(self) -> int:
        return len(self.variant)

    @property
    def latency_s(self) -> np.ndarray:
        return self.model_latency_s + self.batch_wait_s + self.queue_wait_s

    @property
    def cores_total(self) -> np.ndarray:
        return self.cores * self.replicas

    def take(self, index: np.ndarray) -> StageOptions:
        values = {}
        for f in fields(self):
            value = getattr(self, f.name)
            values[f.name] = value[index] if isinstance(value, np.ndarray) else value
        return StageOptions(**values)


def stage_points(
    spec: PipelineSpec, profile: pd.DataFrame, restriction: Restriction | None = None
) -> list[StagePoints]:
    """The profile rows each stage may use: the spec's variants, batch sizes, cores and a policy's pin."""
    restriction = restriction or Restriction()
    column = LATENCY_COLUMNS[spec.latency_quantile]
    profiled_accuracy = variant_accuracy(profile)
    accuracies: dict[tuple[str, str], float] = {}
    for stage in spec.stages:
        for variant in stage.variants:
            value = variant.accuracy
            if value is None:
                value = profiled_accuracy.get((stage.name, variant.name))
            if value is None:
                raise ProfileError(
                    f"no accuracy for variant {variant.name!r} of stage {stage.name!r}: "
                    "neither the spec nor the profile gives one"
                )
            accuracies[(stage.name, variant.name)] = value
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
            )
        )
    return result


def _replica_grid(
    points: StagePoints, load: float, quantile: str, resolution: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(point index, replicas, queue wait) of every option worth considering."""
    h = points.throughput_rps
    # Strictly more capacity than load: at n * h == load the queue never drains.
    fewest = np.floor(load / h).astype(np.int64) + 1 if load > 0 else np.zeros(len(points), dtype=np.int64)
    lo = np.maximum(fewest, points.min_replicas)
    feasible = lo <= points.max_replicas
    if load <= 0 or not feasible.any():
        idx = np.flatnonzero(feasible)
        return idx, lo[idx], np.zeros(len(idx))
    offered = load / h
    # Enough servers for the waiting probability to be negligible; extended below if not.
    top = int(min(points.max_replicas, math.ceil(offered.max() + 6 * math.sqrt(offered.max()) + 6)))
    top = max(top, int(lo[feasible].max()))  # a pinned or high minimum replica count lies above the estimate
    while True:
        table = erlang_b_table(offered, top)
        n = np.arange(1, top + 1)[:, None]
        c = erlang_c_from_b(table[1:], n, offered[None, :])
        wait = wait_from_erlang_c(c, load, points.batch_size[None, :], h[None, :], n, quantile)
        if top >= points.max_replicas or np.all(wait[-1] <= resolution):
            break
        top = min(points.max_replicas, top * 2)
    # Keep n in [lo, first n whose wait is within the resolution] per point.
    rows = n[:, 0][:, None]
    settled = np.where(wait <= resolution, rows, top + 1).min(axis=0)
    # The fewest allowed replicas always count, even when the wait settled below them.
    last = np.maximum(np.minimum(settled, top), lo)
    keep = (rows >= lo[None, :]) & (rows <= last[None, :]) & feasible[None, :]
    keep &= np.isfinite(wait)
    replica_idx, point_idx = np.nonzero(keep)
    order = np.lexsort((replica_idx, point_idx))
    point_idx, replica_idx = point_idx[order], replica_idx[order]
    return point_idx, replica_idx + 1, wait[replica_idx, point_idx]


def expand_options(
    spec: PipelineSpec,
    points: list[StagePoints],
    load_rps: float,
    current: Mapping[str, tuple[str, int]] | None = None,
    wait_resolution_s: float = WAIT_RESOLUTION_S,
) -> list[StageOptions]:
    """Every option of every stage at ``load_rps``, unpruned. ``current`` maps stage -> (variant, cores)."""
    weights = spec.objective
    result = []
    for stage_points in points:
        point_idx, replicas, waits = _replica_grid(
            stage_points, load_rps, spec.latency_quantile, wait_resolution_s
        )
        variant = stage_points.variant[point_idx]
        batch = stage_points.batch_size[point_idx]
        cores = stage_points.cores[point_idx]
        if current and stage_points.stage in current:
            running_variant, running_cores = current[stage_points.stage]
            names = np.array(stage_points.variant_names, dtype=object)
            changed = (names[variant] != running_variant) | (cores != running_cores)
        else:
            changed = np.zeros(len(point_idx), dtype=bool)
        penalty = (
            weights.cost_weight * cores * replicas
            + weights.batch_weight * batch
            + weights.change_penalty * changed
        )
        result.append(
            StageOptions(
                stage=stage_points.stage,
                variant_names=stage_points.variant_names,
                variant=variant,
                batch_size=batch,
                cores=cores,
                replicas=replicas,
                model_latency_s=stage_points.model_latency_s[point_idx],
                batch_wait_s=batch_formation_delay(load_rps, batch),
                queue_wait_s=waits,
                throughput_rps=stage_points.throughput_rps[point_idx],
                accuracy=stage_points.accuracy[point_idx],
                score=stage_points.score[point_idx],
                changed=changed,
                penalty=penalty,
            )
        )
    return result


def drop_unreachable(options: list[StageOptions], sla_s: float) -> list[StageOptions]:
    """Drop options that miss the SLA even with every other stage at its fastest option."""
    fastest = [float(o.latency_s.min()) if len(o) else math.inf for o in options]
    total = sum(fastest)
    return [
        o.take(np.flatnonzero(o.latency_s <= sla_s - (total - f) + 1e-12))
        for o, f in zip(options, fastest, strict=True)
    ]


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
