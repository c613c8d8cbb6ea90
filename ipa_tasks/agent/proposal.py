"""What the agent answers: a plan it proposes, with its reasons (the agent's output type)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from ipa_tasks.optimizer.plan import Plan


class StageChoice(BaseModel):
    """One stage's configuration, as the agent names it."""

    stage: str
    variant: str
    batch_size: int = Field(ge=1)
    cores: int = Field(ge=1)
    replicas: int = Field(ge=0)


class Proposal(BaseModel):
    """The plan the agent proposes and why, in plain words (which terms of the objective it traded)."""

    stages: list[StageChoice]
    rationale: str


def proposal_plan(proposal: Proposal, pipeline: str, load_rps: float, sla_s: float) -> Plan:
    """The proposal as a plan for the planner to evaluate (only the five fields per stage count)."""
    stages = [choice.model_dump() for choice in proposal.stages]
    return Plan.from_dict(
        {"pipeline": pipeline, "policy": "agent", "load_rps": load_rps, "sla_s": sla_s, "stages": stages}
    )
