"""The names a user picks from for the adaptation loop (forecasters, targets), without importing what they
name: ``ipa_adapt`` builds its trigger form from these at every parse."""

from __future__ import annotations

from ipa_tasks.forecasting.names import FORECASTERS
from ipa_tasks.optimizer.choices import POLICIES

TARGETS = ("auto", "local", "kubernetes", "stage-servers")
LOOP_POLICIES = (*POLICIES, "agent")
"""The optimizer's policies, and the opt-in agent (ipa_tasks.agent.policy)."""

__all__ = ["FORECASTERS", "LOOP_POLICIES", "TARGETS"]
