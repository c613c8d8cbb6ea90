"""The check every agent plan passes before anything uses it: the exact optimizer's judgement.

A proposal is **rejected**, and the MILP's plan used instead, when
* it is infeasible: an option the spec does not offer, replicas outside the bounds, too little capacity,
  or the SLA missed by the queueing model (:meth:`~ipa_tasks.optimizer.planner.Planner.evaluate`); or
* its objective is below the MILP's by more than ``margin`` of the MILP's objective's magnitude (with the
  change penalty charged against what runs, for both).

When the MILP itself has no plan that meets the SLA (a degraded plan), a feasible proposal wins: it is
better than what the optimizer could offer.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ipa_tasks.agent.proposal import Proposal, proposal_plan
from ipa_tasks.optimizer.plan import Plan
from ipa_tasks.optimizer.planner import Planner


def milp_instead(milp: Plan, why: str) -> Plan:
    """The MILP's plan, saying why it is used instead of the agent's (in ``reason``, which the decision
    record keeps, and in ``notes``)."""
    return replace(milp, reason=f"{milp.reason}; {why}" if milp.reason else why, notes=(*milp.notes, why))


def milp_objective(milp: Plan) -> float | None:
    """What an agent's plan is compared with: the MILP plan's objective, none for a degraded plan."""
    return milp.terms.objective if milp.terms is not None and not milp.degraded else None


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    plan: Plan
    """The plan to use: the agent's when accepted, else the MILP's."""
    reason: str
    agent_objective: float | None
    milp_objective: float | None


def vet(
    planner: Planner, proposal: Proposal, load_rps: float, current: Plan | None, milp: Plan, margin: float
) -> Verdict:
    """Judge ``proposal`` against ``milp`` (the optimizer's plan for the same load and running state)."""
    spec = planner.spec
    judged = planner.evaluate(proposal_plan(proposal, spec.name, load_rps, spec.sla_s), load_rps, current)
    optimum = milp_objective(milp)
    agent_objective = (
        judged.plan.terms.objective if judged.plan.terms is not None and judged.feasible else None
    )

    def rejected(why: str) -> Verdict:
        note = f"agent plan rejected, the MILP's used: {why}"
        return Verdict(False, milp_instead(milp, note), note, agent_objective, optimum)

    if not judged.feasible:
        return rejected("infeasible: " + "; ".join(judged.problems))
    assert agent_objective is not None
    if optimum is not None:
        shortfall = optimum - agent_objective
        allowed = margin * max(abs(optimum), 1e-9)
        if shortfall > allowed:
            return rejected(
                f"objective {agent_objective:.4g} is {shortfall:.4g} below the MILP's {optimum:.4g} "
                f"(more than the margin of {margin:.0%})"
            )
        reason = f"agent plan used: objective {agent_objective:.4g} vs the MILP's {optimum:.4g}"
    else:
        reason = f"agent plan used: feasible (objective {agent_objective:.4g}); the MILP's plan was degraded"
    used = replace(judged.plan, policy="agent", reason=reason, notes=(f"rationale: {proposal.rationale}",))
    return Verdict(True, used, reason, agent_objective, optimum)
