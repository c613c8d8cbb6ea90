"""Agent sessions: ``plan`` (propose a configuration, vetted against the MILP), ``explain`` (a recorded
decision in plain words) and ``what-if`` (answer a question with the read-only tools). Each keeps a
transcript of what the agent asked and what the tools answered."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic_ai import Agent
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    RetryPromptPart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models import Model

from ipa_tasks.agent import tools
from ipa_tasks.agent.context import PlanningContext
from ipa_tasks.agent.guard import Verdict, milp_instead, milp_objective, vet
from ipa_tasks.agent.proposal import Proposal
from ipa_tasks.optimizer.plan import Plan

ROLE = (
    "You configure a multi-model ML inference pipeline for a platform team. For every stage you choose the "
    "model variant, batch size, cores per replica and number of replicas. A configuration must meet the "
    "end-to-end latency SLA at the load to plan for; among those, a higher objective is better "
    "(objective = accuracy term - cost term - batch term - change term; read_spec gives the weights). "
    "Use the tools for every number you state; never guess a latency, a throughput or an accuracy."
)
PLAN_TASK = (
    "Propose a configuration for the load to plan for. Start from read_spec and read_load; the exact "
    "optimizer (solve) is a strong baseline, and you may improve on it or argue for a different trade-off. "
    "Check every candidate with evaluate_plan and propose only one it calls feasible. In the rationale, say "
    "in plain words which objective terms you traded against which, with their values."
)
APPLY_RULE = (
    "You may apply the plan with apply_plan only if the user asked for it in this request. Otherwise never "
    "call apply_plan."
)
NO_APPLY = "Nothing can be applied in this session."
EXPLAIN_TASK = (
    "Explain the recorded decision (decision_under_review) to an engineer in plain words: what load was seen "
    "and forecast, what was chosen, and why, citing the objective's terms with their recorded values "
    "(accuracy term, cost term, batch term, change term, objective). Compare with earlier decisions "
    "(past_decisions) when it helps. Answer in a few short paragraphs."
)
WHAT_IF_TASK = (
    "Answer the engineer's what-if question with the read-only tools (solve, evaluate_plan at other loads or "
    "with other configurations, read_profiles). Nothing is applied in this session. Give numbers from tools."
)
TERM_NAMES = ("objective", "accuracy", "accuracy_term", "cost_term", "batch_term", "change_term")


@dataclass(frozen=True)
class PlanSession:
    verdict: Verdict
    milp: Plan
    proposal: Proposal | None
    transcript: tuple[str, ...]
    applied: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    @property
    def plan(self) -> Plan:
        return self.verdict.plan


@dataclass(frozen=True)
class TextSession:
    text: str
    transcript: tuple[str, ...]
    record: dict[str, Any] | None = None
    """For ``explain``: the decision's recorded objective terms, shown beside the agent's words."""


def planning_agent(may_apply: bool) -> Agent[PlanningContext, Proposal]:
    read_only = [*tools.READ_TOOLS]
    return Agent(
        None,
        deps_type=PlanningContext,
        output_type=Proposal,
        instructions=f"{ROLE}\n\n{PLAN_TASK}\n\n{APPLY_RULE if may_apply else NO_APPLY}",
        tools=[*read_only, tools.apply_plan] if may_apply else read_only,
        defer_model_check=True,
        retries=2,
    )


def text_agent(task: str, extra: tuple[Any, ...] = ()) -> Agent[PlanningContext, str]:
    return Agent(
        None,
        deps_type=PlanningContext,
        output_type=str,
        instructions=f"{ROLE}\n\n{task}",
        tools=[*tools.READ_TOOLS, *extra],
        defer_model_check=True,
        retries=2,
    )


def plan_session(ctx: PlanningContext, model: Model, request: str = "") -> PlanSession:
    """Ask the agent for a plan at ``ctx.load_rps`` and vet it against the MILP's; the MILP's plan is used
    when the agent's is infeasible, too much worse, or when the agent fails altogether."""
    milp = ctx.planner.plan(ctx.load_rps, "ipa", current=ctx.current)
    prompt = request or f"Plan pipeline {ctx.spec.name} for {ctx.load_rps:.2f} requests/s."
    try:
        result = planning_agent(ctx.may_apply).run_sync(prompt, deps=ctx, model=model)
    except Exception as exc:  # the model is unreachable or gave no valid proposal: the MILP plans
        reason = f"agent failed ({type(exc).__name__}: {exc}); the MILP's plan is used"
        used = milp_instead(milp, reason)
        return PlanSession(
            Verdict(False, used, reason, None, milp_objective(milp)), milp, None, (f"error: {reason}",)
        )
    verdict = vet(ctx.planner, result.output, ctx.load_rps, ctx.current, milp, ctx.margin)
    return PlanSession(verdict, milp, result.output, transcript(result.all_messages()), tuple(ctx.applied))


def explain_session(ctx: PlanningContext, model: Model, request: str = "") -> TextSession:
    """The decision in ``ctx.decision`` explained; the record's own terms come with it, whatever the model
    wrote."""
    if ctx.decision is None:
        raise ValueError("explain needs a recorded decision (PlanningContext.decision)")
    agent = text_agent(EXPLAIN_TASK, (tools.decision_under_review,))
    result = agent.run_sync(request or "Explain this decision.", deps=ctx, model=model)
    record = {name: ctx.decision.get(name) for name in ("time", "configuration", "plan_status", *TERM_NAMES)}
    return TextSession(result.output, transcript(result.all_messages()), record)


def what_if_session(ctx: PlanningContext, model: Model, question: str) -> TextSession:
    result = text_agent(WHAT_IF_TASK).run_sync(question, deps=replace(ctx, may_apply=False), model=model)
    return TextSession(result.output, transcript(result.all_messages()))


def transcript(messages: list[ModelMessage], width: int = 400) -> tuple[str, ...]:
    """The session in lines: the user's request, every tool call with its arguments and (shortened)
    answer, and the agent's words; instructions are left out."""
    lines = []
    for message in messages:
        for part in message.parts:
            if isinstance(message, ModelRequest) and isinstance(part, UserPromptPart):
                lines.append(f"user: {part.content}")
            elif isinstance(part, ToolReturnPart):
                lines.append(f"  -> {part.tool_name}: {_short(part.content, width)}")
            elif isinstance(part, RetryPromptPart):
                lines.append(f"  -> retry: {_short(part.content, width)}")
            elif isinstance(message, ModelResponse) and isinstance(part, ToolCallPart):
                lines.append(f"agent calls {part.tool_name}({_short(part.args, width)})")
            elif isinstance(message, ModelResponse) and isinstance(part, TextPart) and part.content.strip():
                lines.append(f"agent: {part.content.strip()}")
    return tuple(lines)


def _short(value: Any, width: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"
