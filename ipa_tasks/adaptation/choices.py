"""The names a user picks from for the adaptation loop (forecasters, targets), without importing what they
name: ``ipa_adapt`` builds its trigger form from these at every parse."""

from __future__ import annotations

from ipa_tasks.forecasting.names import FORECASTERS

TARGETS = ("auto", "local", "kubernetes", "stage-servers")

__all__ = ["FORECASTERS", "TARGETS"]
