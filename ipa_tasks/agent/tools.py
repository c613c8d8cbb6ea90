"""The agent's tools: what a platform engineer would look at and do, as typed functions of the session's
:class:`~.context.PlanningContext`. Each returns plain JSON-able data (what the model reads).

Read-only: ``read_spec``, ``read_profiles``, ``read_load``, ``solve``, ``evaluate_plan``,
``past_decisions``, ``decision_under_review``. The one that changes anything, ``apply_plan``, refuses unless
the session allows it (``may_apply``) and the plan passes the same check as every proposal
(:func:`~.guard.vet`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic_ai import RunContext

from ipa_tasks.actuation.config import config_of
from ipa_tasks.actuation.target import apply_change
from ipa_tasks.agent.context import PlanningContext
from ipa_tasks.agent.decision_record import recent_decisions
from ipa_tasks.agent.guard import vet
from ipa_tasks.agent.proposal import Proposal, StageChoice, proposal_plan
from ipa_tasks.optimizer.choices import POLICIES
from ipa_tasks.optimizer.plan import Plan, json_safe

MAX_PROFILE_ROWS = 60


def plan_summary(plan: Plan) -> dict[str, Any]:
    """A plan as the model reads it: per stage what runs and its latency, the totals, the objective terms."""
    terms = plan.terms
    return json_safe(
        {
            "policy": plan.policy,
            "status": plan.status,
            "reason": plan.reason,
            "load_rps": plan.load_rps,
            "stages": [
                {
                    "stage": s.stage,
                    "variant": s.variant,
                    "batch_size": s.batch_size,
                    "cores": s.cores,
                    "replicas": s.replicas,
                    "latency_ms": s.latency_s * 1000,
                    "capacity_rps": s.capacity_rps,
                }
                for s in plan.stages
            ],
            "latency_ms": plan.latency_s * 1000,
            "sla_ms": plan.sla_s * 1000,
            "total_cores": plan.total_cores,
            "terms": None
            if terms is None
            else {
                "objective": terms.objective,
                "accuracy": terms.accuracy,
                "accuracy_term": terms.accuracy_term,
                "cost_term": terms.cost_term,
                "batch_term": terms.batch_term,
                "change_term": terms.change_term,
            },
        }
    )


def read_spec(ctx: RunContext[PlanningContext]) -> dict[str, Any]:
    """The pipeline's spec: stages in order with their variants (accuracy), allowed batch sizes, cores per
    replica and replica bounds; the SLA; how pipeline accuracy is computed; the objective's weights
    (objective = accuracy_weight x accuracy - cost_weight x cores - batch_weight x batch sizes -
    change_penalty x stages changed)."""
    spec = ctx.deps.spec
    return {
        "pipeline": spec.name,
        "sla_ms": spec.sla_s * 1000,
        "latency_quantile": spec.latency_quantile,
        "accuracy_method": spec.accuracy_method,
        "objective": spec.objective.model_dump(),
        "max_total_cores": spec.max_total_cores,
        "stages": [
            {
                "name": stage.name,
                "load_factor": stage.load_factor,
                "variants": [{"name": v.name, "accuracy": v.accuracy} for v in stage.variants],
                "batch_sizes": stage.batch_sizes,
                "cores": stage.cores,
                "replicas": {"min": stage.replicas.min, "max": stage.replicas.max},
            }
            for stage in spec.stages
        ],
    }


def read_profiles(ctx: RunContext[PlanningContext], stage: str, variant: str | None = None) -> dict[str, Any]:
    """A stage's profiled options: per variant, batch size and cores, the batch latency at the spec's
    quantile (ms) and one replica's throughput (requests/s). ``variant`` narrows it to one variant."""
    points = {p.stage: p for p in ctx.deps.planner.points("ipa")}
    if stage not in points:
        return {"error": f"no stage {stage!r}; the stages are {', '.join(points)}"}
    p = points[stage]
    rows = [
        {
            "variant": p.variant_names[p.variant[i]],
            "batch_size": int(p.batch_size[i]),
            "cores": int(p.cores[i]),
            "latency_ms": float(p.model_latency_s[i]) * 1000,
            "throughput_rps": float(p.throughput_rps[i]),
            "accuracy": float(p.accuracy[i]),
        }
        for i in range(len(p))
        if variant is None or p.variant_names[p.variant[i]] == variant
    ]
    return json_safe(
        {
            "stage": stage,
            "rows": rows[:MAX_PROFILE_ROWS],
            "rows_left_out": max(0, len(rows) - MAX_PROFILE_ROWS),
        }
    )


def read_load(ctx: RunContext[PlanningContext]) -> dict[str, Any]:
    """The recent load (requests/s: last, peak, mean over the history) and the load to plan for (the
    forecast with its margin), with the forecaster's name."""
    history = np.asarray(ctx.deps.history, dtype=float)
    seen = history[np.isfinite(history)]
    return json_safe(
        {
            "history_s": len(history),
            "last_rps": float(seen[-1]) if len(seen) else None,
            "peak_rps": float(seen.max()) if len(seen) else None,
            "mean_rps": float(seen.mean()) if len(seen) else None,
            "plan_for_rps": ctx.deps.load_rps,
            "forecaster": ctx.deps.forecaster,
            "observation": ctx.deps.observation,
        }
    )


def solve(
    ctx: RunContext[PlanningContext], load_rps: float | None = None, policy: str = "ipa"
) -> dict[str, Any]:
    """The exact optimizer's plan (MILP) for ``load_rps`` (default: the load to plan for) under ``policy``
    (ipa, or a baseline: fa2-low, fa2-high, rim), charging changes from what runs."""
    if policy not in POLICIES:
        return {"error": f"unknown policy {policy!r}; choose one of {', '.join(POLICIES)}"}
    load = ctx.deps.load_rps if load_rps is None else load_rps
    if not (math.isfinite(load) and load >= 0):
        return {"error": f"load must be a finite number >= 0, got {load}"}
    return plan_summary(ctx.deps.planner.plan(load, policy, current=ctx.deps.current))


def evaluate_plan(
    ctx: RunContext[PlanningContext], stages: list[StageChoice], load_rps: float | None = None
) -> dict[str, Any]:
    """Check a candidate plan: whether it is feasible (the spec's options and bounds, capacity, the SLA by
    the queueing model), its objective terms, and a short replay of the coming load in the simulator (share
    of requests late or dropped, p99 latency)."""
    from ipa_tasks.simulation.replay import replay_plan

    deps = ctx.deps
    load = deps.load_rps if load_rps is None else load_rps
    candidate = proposal_plan(Proposal(stages=stages, rationale=""), deps.spec.name, load, deps.spec.sla_s)
    judged = deps.planner.evaluate(candidate, load, deps.current)
    result: dict[str, Any] = {
        **plan_summary(judged.plan),
        "feasible": judged.feasible,
        "problems": list(judged.problems),
    }
    complete = len(judged.plan.stages) == len(deps.spec.stages) and all(
        s.replicas > 0 for s in judged.plan.stages
    )
    if complete and deps.replay_s > 0:
        counts = np.full(deps.replay_s, math.ceil(load), dtype=int)
        summary = replay_plan(deps.planner, deps.planner.profile, judged.plan, counts).summary
        result["replay"] = {
            "seconds": deps.replay_s,
            "requests": summary.get("requests"),
            "late_or_dropped_share": summary.get("violation_share"),
            "p99_ms": float(summary.get("p99_latency_s", math.nan)) * 1000,
        }
    return json_safe(result)


def apply_plan(ctx: RunContext[PlanningContext], stages: list[StageChoice], rationale: str) -> dict[str, Any]:
    """Apply a plan to what runs, through the loop's own target (safe order, rollback on failure). Only in a
    session that allows it, and only a plan that passes the check every proposal gets."""
    deps = ctx.deps
    if not deps.may_apply or deps.target is None:
        why = "this session may not change anything" if not deps.may_apply else "no target is connected"
        return {"applied": False, "reason": f"not applied: {why} (the user decides: ipa agent plan --apply)"}
    milp = deps.planner.plan(deps.load_rps, "ipa", current=deps.current)
    verdict = vet(
        deps.planner,
        Proposal(stages=stages, rationale=rationale),
        deps.load_rps,
        deps.current,
        milp,
        deps.margin,
    )
    if not verdict.accepted:
        return {"applied": False, "reason": f"not applied: {verdict.reason}"}
    running = deps.target.read(deps.spec)
    report = apply_change(deps.target, deps.spec, running, config_of(verdict.plan), log=lambda line: None)
    deps.applied.append(report.to_dict())
    return {"applied": report.status == "applied", "status": report.status, "message": report.message}


def past_decisions(ctx: RunContext[PlanningContext], limit: int = 10) -> dict[str, Any]:
    """The adaptation loop's last decisions for this pipeline (newest first; from MLflow, else the local
    record): what was observed and forecast, the plan and its objective terms, what was applied and why."""
    rows, source = recent_decisions(
        ctx.deps.home, ctx.deps.tracking_uri, ctx.deps.spec.name, max(1, min(limit, 50))
    )
    return {"source": source, "decisions": rows}


def decision_under_review(ctx: RunContext[PlanningContext]) -> dict[str, Any]:
    """The recorded decision this session explains: its time, load, forecast, plan, status and reason, and
    the objective's terms as the loop computed them."""
    if ctx.deps.decision is None:
        return {"error": "this session is not about a recorded decision"}
    return ctx.deps.decision


READ_TOOLS = (read_spec, read_profiles, read_load, solve, evaluate_plan, past_decisions)
