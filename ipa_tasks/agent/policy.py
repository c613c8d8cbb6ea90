"""The opt-in policy ``agent`` of ``ipa_adapt`` and ``ipa replay``: the agent proposes, the guard decides.

Each decision asks the agent for a plan (:func:`~.sessions.plan_session`, nothing applied by the agent:
the loop applies what it decides, as for every policy) and uses it only when it passes
:func:`~.guard.vet`; otherwise the MILP's plan, with the reason in the plan's ``reason`` (the decision
record's ``reason`` column). With no model configured, the loop says so and plans with the MILP.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ipa_tasks.agent.context import DEFAULT_MARGIN, PlanningContext
from ipa_tasks.agent.guard import milp_instead
from ipa_tasks.agent.model_config import AgentNotConfigured, build_model, model_config
from ipa_tasks.agent.sessions import plan_session
from ipa_tasks.optimizer.plan import Plan
from ipa_tasks.optimizer.planner import Planner

Log = Callable[[str], object]
POLICY = "agent"


def agent_choice(model: object, *, margin: float = DEFAULT_MARGIN, replay_s: int = 30, log: Log = print):
    """A replay's decision at each tick (:data:`ipa_tasks.simulation.replay.Choose`), by the agent."""

    def choose(planner: Planner, load: float, current: Plan | None) -> Plan:
        ctx = PlanningContext(planner, load_rps=load, current=current, margin=margin, replay_s=replay_s)
        session = plan_session(ctx, model)  # type: ignore[arg-type]
        log(session.verdict.reason)
        return session.plan

    return choose


def agent_tick_plan(
    planner: Planner,
    load_rps: float,
    current: Plan | None,
    *,
    history: Sequence[float] = (),
    observation: dict[str, Any] | None = None,
    forecaster: str = "",
    home: Path | None = None,
    tracking_uri: str = "",
    margin: float = DEFAULT_MARGIN,
    log: Log = print,
    environ: Mapping[str, str] = os.environ,
) -> Plan:
    """One ``ipa_adapt`` tick's plan under policy ``agent`` (see the module docstring)."""
    try:
        model = build_model(model_config(environ))
    except AgentNotConfigured as exc:
        milp = planner.plan(load_rps, "ipa", current=current)
        reason = f"policy agent: {exc}; the MILP's plan is used"
        log(reason)
        return milp_instead(milp, reason)
    ctx = PlanningContext(
        planner,
        load_rps=load_rps,
        history=tuple(history),
        observation=observation,
        forecaster=forecaster,
        current=current,
        margin=margin,
        home=home,
        tracking_uri=tracking_uri,
    )
    session = plan_session(ctx, model)
    for line in session.transcript:
        log(f"  {line}")
    log(session.verdict.reason)
    return session.plan
