"""The forecasters by name, without importing them (DAG files build their trigger forms from these)."""

from __future__ import annotations

BASELINE_FORECASTERS = ("last-value", "window-max", "ewma", "holt")
FORECASTERS = ("lstm", *BASELINE_FORECASTERS)
