"""How good a forecast of the peak load is, in the terms that matter to an SLA.

Over-prediction costs cores; under-prediction costs SLA violations, so it is reported on its own: how often
the forecast fell short and by how much on average (relative to the actual peak).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ForecastScore:
    mape: float
    """Mean absolute percentage error over windows whose actual peak is above zero."""
    under_rate: float
    """Fraction of windows forecast below the actual peak."""
    mean_under: float
    """Mean relative shortfall over the under-predicted windows (0 if none)."""
    windows: int


def score_forecasts(predicted: np.ndarray, actual: np.ndarray) -> ForecastScore:
    predicted, actual = np.asarray(predicted, dtype=float), np.asarray(actual, dtype=float)
    if predicted.shape != actual.shape or predicted.size == 0:
        raise ValueError(f"need equal, non-empty series, got {predicted.shape} and {actual.shape}")
    positive = actual > 0
    if not positive.any():
        raise ValueError("every actual peak is zero: relative errors are undefined")
    relative = (predicted[positive] - actual[positive]) / actual[positive]
    under = relative < 0
    return ForecastScore(
        mape=float(np.mean(np.abs(relative))),
        under_rate=float(np.mean(under)),
        mean_under=float(-relative[under].mean()) if under.any() else 0.0,
        windows=int(positive.sum()),
    )
