"""The guard: an agent's plan is used only when the exact optimizer finds it feasible and not worse than its
own plan by more than the margin; otherwise the MILP's plan is used and the reason says why."""

from __future__ import annotations

from dataclasses import replace

from ipa_tasks.agent.guard import vet
from ipa_tasks.agent.proposal import Proposal, StageChoice
from ipa_tasks.optimizer.planner import Planner
from tests.agent.conftest import LOAD_RPS


def proposal_from(plan, **stage_changes) -> Proposal:
    keys = ("stage", "variant", "batch_size", "cores", "replicas")
    choices = [StageChoice(**{k: getattr(s, k) for k in keys}) for s in plan.stages]
    for choice in choices:
        if choice.stage in stage_changes:
            for key, value in stage_changes[choice.stage].items():
                setattr(choice, key, value)
    return Proposal(stages=choices, rationale="test")


def test_the_milps_own_plan_passes_and_is_used_as_the_agents(planner: Planner) -> None:
    milp = planner.plan(LOAD_RPS)
    verdict = vet(planner, proposal_from(milp), LOAD_RPS, None, milp, margin=0.02)
    assert verdict.accepted and verdict.plan.policy == "agent"
    assert verdict.agent_objective == verdict.milp_objective == milp.terms.objective
    assert [(s.variant, s.replicas) for s in verdict.plan.stages] == [
        (s.variant, s.replicas) for s in milp.stages
    ]
    assert "rationale: test" in verdict.plan.notes


def test_an_infeasible_proposal_is_rejected_and_the_milps_plan_used_with_the_reason(planner: Planner) -> None:
    milp = planner.plan(1500.0)  # detect needs 2 replicas
    bad = proposal_from(milp, detect={"replicas": 1})
    verdict = vet(planner, bad, 1500.0, None, milp, margin=0.02)
    assert not verdict.accepted
    assert verdict.plan.stages == milp.stages
    assert verdict.reason.startswith("agent plan rejected, the MILP's used: infeasible: stage detect")
    assert verdict.reason in verdict.plan.reason and verdict.reason in verdict.plan.notes


def test_a_feasible_but_clearly_worse_proposal_is_rejected_for_the_margin(planner: Planner) -> None:
    milp = planner.plan(LOAD_RPS)
    extra = {s.stage: {"replicas": s.replicas + 3} for s in milp.stages}  # same choices, 6 idle replicas more
    costly = proposal_from(milp, **extra)
    verdict = vet(planner, costly, LOAD_RPS, None, milp, margin=0.02)
    assert not verdict.accepted and "below the MILP's" in verdict.reason and "margin of 2%" in verdict.reason
    assert verdict.agent_objective < verdict.milp_objective
    lenient = vet(planner, costly, LOAD_RPS, None, milp, margin=10.0)
    assert lenient.accepted, "within a wide enough margin the same plan is used"


def test_where_the_milp_can_only_degrade_a_feasible_proposal_wins(planner: Planner) -> None:
    milp = planner.plan(LOAD_RPS)
    degraded = replace(milp, degraded=True, status="degraded", reason="no plan meets the SLA")
    verdict = vet(planner, proposal_from(milp), LOAD_RPS, None, degraded, margin=0.0)
    assert verdict.accepted and verdict.milp_objective is None and "degraded" in verdict.reason
