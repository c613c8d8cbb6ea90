"""Exact bound pruning: a quick feasible plan, then drop every option that cannot beat it.

Most options of a stage are cheap-to-slow trade-offs (more replicas, more cores, smaller batches) that only
matter when the SLA is tight. A feasible plan with objective ``LB`` rules out any option ``o`` of stage
``s`` whose optimistic bound is below ``LB``:

* product accuracy: ``UB(o) = alpha * a_o * prod_{t != s} max a_t - pen_o - sum_{t != s} min pen_t``
* sum accuracy: ``UB(o) = alpha * a_o - pen_o + sum_{t != s} max_o' (alpha * a_o' - pen_o')``

Every option of the feasible plan itself has ``UB >= LB``, so the pruned problem keeps that plan and the
optimum. The feasible plan comes from pricing latency with a Lagrange multiplier (bisection until the
priced choice meets the SLA), improved by exact coordinate ascent one stage at a time. If no feasible
plan is found nothing is pruned: the heuristic can cost time, never the optimum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ipa_tasks.optimizer.options import StageOptions
from ipa_tasks.optimizer.solvers import combination_objective
from ipa_tasks.spec import AccuracyMethod, ObjectiveWeights

BISECTION_STEPS = 12
ASCENT_PASSES = 4
FEASIBILITY_TOL = 1e-9
TIE_TOL = 1e-12
"""Relative: objective values this close are a tie (equal costs computed in another order)."""


def _accuracy_weights(options: list[StageOptions], method: AccuracyMethod) -> list[float]:
    """How much one unit of a stage's score is worth, with the other stages at their best."""
    if method != "product":
        return [1.0] * len(options)
    best = [float(o.score.max()) for o in options]
    return [math.prod(best[:s] + best[s + 1 :]) for s in range(len(options))]


def _priced_choice(
    options: list[StageOptions], value_weights: list[float], alpha: float, mu: float
) -> list[int]:
    return [
        int(np.argmax(alpha * w * o.score - o.penalty - mu * o.latency_s))
        for o, w in zip(options, value_weights, strict=True)
    ]


def _feasible(
    options: list[StageOptions], chosen: list[int], sla_s: float, max_total_cores: int | None
) -> bool:
    latency = sum(float(o.latency_s[i]) for o, i in zip(options, chosen, strict=True))
    cores = sum(int(o.cores_total[i]) for o, i in zip(options, chosen, strict=True))
    return latency <= sla_s + FEASIBILITY_TOL and (max_total_cores is None or cores <= max_total_cores)


@dataclass(frozen=True)
class Incumbent:
    chosen: list[int]
    """Option index per stage."""
    latency_price: float
    """The Lagrange multiplier of the SLA at which the priced choice became feasible (0 if it was at once)."""


def feasible_plan(
    options: list[StageOptions],
    weights: ObjectiveWeights,
    method: AccuracyMethod,
    sla_s: float,
    max_total_cores: int | None,
) -> Incumbent | None:
    """A good feasible plan, or None if the heuristic finds none."""
    if not options or not all(len(o) for o in options):
        return None
    value_weights = _accuracy_weights(options, method)
    alpha = weights.accuracy_weight
    chosen = _priced_choice(options, value_weights, alpha, 0.0)
    price = 0.0
    if not _feasible(options, chosen, sla_s, max_total_cores):
        # Geometric bisection on the price between "latency nearly free" and "only speed counts";
        # the price needs no precision, any feasible priced choice seeds the ascent.
        spread = sum(
            float(np.ptp(alpha * w * o.score - o.penalty))
            for o, w in zip(options, value_weights, strict=True)
        )
        gaps = [np.diff(np.unique(o.latency_s)) for o in options]
        smallest_gap = min((float(g.min()) for g in gaps if len(g)), default=1.0)
        hi = (spread + 1.0) / max(smallest_gap, 1e-12)
        lo = hi * 1e-9
        best = None
        for _ in range(BISECTION_STEPS):
            mid = math.sqrt(lo * hi)
            candidate = _priced_choice(options, value_weights, alpha, mid)
            if _feasible(options, candidate, sla_s, max_total_cores):
                best, hi = candidate, mid
            else:
                lo = mid
        if best is None:
            candidate = _priced_choice(options, value_weights, alpha, hi)
            if not _feasible(options, candidate, sla_s, max_total_cores):
                return None
            best = candidate
        chosen, price = best, hi
    return Incumbent(coordinate_ascent(options, chosen, weights, method, sla_s, max_total_cores), price)


def coordinate_ascent(
    options: list[StageOptions],
    chosen: list[int],
    weights: ObjectiveWeights,
    method: AccuracyMethod,
    sla_s: float,
    max_total_cores: int | None,
) -> list[int]:
    """Re-choose one stage at a time, exactly, keeping the plan feasible, until nothing improves.

    Also polishes a solver's answer: a gain smaller than the solver's tolerances (the batch tie-break is
    1e-6 per request of batch) is still taken, and ties are settled the same way whichever solver ran:
    among equally good options of a stage, the lower latency, then fewer cores in total, then the smaller
    batch, then the earlier variant in the spec, then fewer cores per replica.
    """
    chosen = list(chosen)
    alpha = weights.accuracy_weight
    for _ in range(ASCENT_PASSES):
        improved = False
        for s, o in enumerate(options):
            others = [(options[t], chosen[t]) for t in range(len(options)) if t != s]
            latency_left = sla_s - sum(float(p.latency_s[i]) for p, i in others)
            ok = o.latency_s <= latency_left + FEASIBILITY_TOL
            if max_total_cores is not None:
                ok &= o.cores_total <= max_total_cores - sum(int(p.cores_total[i]) for p, i in others)
            if method == "product":
                value = alpha * math.prod(float(p.score[i]) for p, i in others) * o.score - o.penalty
            else:
                value = alpha * o.score - o.penalty
            value = np.where(ok, value, -np.inf)
            top = float(value.max())
            tied = np.flatnonzero(value >= top - TIE_TOL * max(1.0, abs(top)))
            order = np.lexsort(
                (o.cores[tied], o.variant[tied], o.batch_size[tied], o.cores_total[tied], o.latency_s[tied])
            )
            best = int(tied[order[0]])
            if best != chosen[s] and (value[best] > value[chosen[s]] or chosen[s] in tied):
                chosen[s] = best
                improved = True
        if not improved:
            break
    return chosen


def prune_by_bound(
    options: list[StageOptions],
    weights: ObjectiveWeights,
    method: AccuracyMethod,
    sla_s: float,
    incumbent: Incumbent,
    latency_floor: bool = False,
) -> list[StageOptions]:
    """Drop options whose optimistic bound is below the incumbent's objective (see module docstring).

    The bound is the smaller of two valid ones: latency free (``mu = 0``), and latency charged at the
    incumbent's price ``mu`` (Lagrangian relaxation of the SLA: ``+ mu * (SLA - sum of latencies)`` is
    non-negative for every feasible plan), which is much tighter when the SLA binds.

    ``latency_floor=True`` is for fewest-replica options standing in for all options of their point: more
    replicas cost more but queue less, so the priced bound then charges only the latency no replica count
    can remove (model latency and batch formation).
    """
    lower = combination_objective(options, incumbent.chosen, weights, method)
    alpha = weights.accuracy_weight
    tolerance = 1e-9 * max(1.0, abs(lower))
    prices = {0.0, incumbent.latency_price}
    latency = [o.model_latency_s + o.batch_wait_s if latency_floor else o.latency_s for o in options]
    if method == "product":
        best_score = [float(o.score.max()) for o in options]
        value = [
            alpha * math.prod(best_score[:s] + best_score[s + 1 :]) * o.score for s, o in enumerate(options)
        ]
        others = {
            mu: [float((-(o.penalty + mu * lat)).max()) for o, lat in zip(options, latency, strict=True)]
            for mu in prices
        }
    else:
        value = [alpha * o.score for o in options]
        others = {
            mu: [
                float((alpha * o.score - o.penalty - mu * lat).max())
                for o, lat in zip(options, latency, strict=True)
            ]
            for mu in prices
        }
    pruned = []
    for s, o in enumerate(options):
        upper = np.full(len(o), np.inf)
        for mu, best in others.items():
            bound = value[s] - o.penalty - mu * latency[s] + mu * sla_s + sum(best) - best[s]
            upper = np.minimum(upper, bound)
        pruned.append(o.take(np.flatnonzero(upper >= lower - tolerance)))
    return pruned
