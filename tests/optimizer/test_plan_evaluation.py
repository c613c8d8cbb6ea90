"""Planner.evaluate: a plan from anywhere (an agent, a person) judged as the optimizer judges its own."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given

from ipa_tasks.optimizer.plan import Plan
from ipa_tasks.optimizer.planner import Planner
from tests.optimizer.instances import instances, two_stage_spec
from tests.optimizer.test_planner import PROPERTY_SETTINGS


def with_stage(plan: Plan, stage: str, **changes: object) -> Plan:
    return replace(plan, stages=tuple(replace(s, **changes) if s.stage == stage else s for s in plan.stages))


@PROPERTY_SETTINGS
@given(instance=instances())
def test_the_optimizers_own_plan_is_feasible_with_the_same_latency_and_terms(instance) -> None:
    spec, profile, load, policy = instance
    planner = Planner(spec, profile)
    plan = planner.plan(load, policy=policy, solver="brute-force")
    if plan.degraded:
        assert not planner.evaluate(plan, load).feasible
        return
    judged = planner.evaluate(plan, load)
    assert judged.feasible, judged.problems
    assert judged.plan.latency_s == pytest.approx(plan.latency_s, rel=1e-9, abs=1e-12)
    assert judged.plan.terms.objective == pytest.approx(plan.terms.objective, rel=1e-9, abs=1e-12)
    assert judged.plan.total_cores == plan.total_cores


def test_too_few_replicas_cannot_carry_the_load() -> None:
    spec, profile = two_stage_spec()
    planner = Planner(spec, profile)
    plan = planner.plan(50.0)
    first = plan.stages[0]
    judged = planner.evaluate(with_stage(plan, first.stage, replicas=1), 50.0)
    assert not judged.feasible
    assert any("cannot carry" in p or "over the SLA" in p for p in judged.problems), judged.problems
    assert judged.plan.status == "infeasible" and judged.plan.reason


def test_what_the_spec_does_not_offer_is_named() -> None:
    spec, profile = two_stage_spec()
    planner = Planner(spec, profile)
    plan = planner.plan(1.0)
    first, second = plan.stages
    unknown = planner.evaluate(with_stage(plan, first.stage, variant="nope"), 1.0)
    assert unknown.problems == (
        f"stage {first.stage}: nope at batch {first.batch_size} with {first.cores} core(s) is not a profiled "
        "option the spec allows",
    )
    bounds = spec.stage(second.stage).replicas
    beyond = planner.evaluate(with_stage(plan, second.stage, replicas=bounds.max + 1), 1.0)
    assert any(f"outside the spec's bounds {bounds.min}..{bounds.max}" in p for p in beyond.problems)
    missing = planner.evaluate(replace(plan, stages=plan.stages[:1]), 1.0)
    assert f"stage {second.stage}: the plan gives it no configuration" in missing.problems
    nothing = planner.evaluate(replace(plan, stages=()), 1.0)
    assert not nothing.feasible and nothing.plan.terms is None, "no stage scored: no terms, not a perfect 1"


def test_a_change_from_what_runs_is_charged_as_the_optimizer_charges_it() -> None:
    spec, profile = two_stage_spec(
        objective={"accuracy_weight": 10.0, "cost_weight": 0.5, "change_penalty": 0.5}
    )
    planner = Planner(spec, profile)
    running = planner.plan(1.0)
    other = next(v.name for v in spec.stages[0].variants if v.name != running.stages[0].variant)
    switched = with_stage(running, running.stages[0].stage, variant=other)
    judged = planner.evaluate(switched, 1.0, current=running)
    assert judged.plan.terms.change_term == pytest.approx(0.5 * sum(s.changed for s in judged.plan.stages))
    assert judged.plan.stages[0].changed and not judged.plan.stages[1].changed
    assert math.isfinite(judged.plan.latency_s) or not judged.feasible


def test_a_bad_load_is_refused() -> None:
    spec, profile = two_stage_spec()
    with pytest.raises(ValueError, match="load must be"):
        Planner(spec, profile).evaluate(Planner(spec, profile).plan(1.0), -1.0)
