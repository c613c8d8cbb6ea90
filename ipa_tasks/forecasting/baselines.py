"""Forecasters that need no training: each predicts the peak load over the horizon from the history.

``history`` is the per-second request rate of the recent past, oldest first. Every forecaster returns a
non-negative rate multiplied by ``1 + margin`` (IPA's ``predictor_margin``), and raises on an empty history:
the caller decides what an unobservable load means (the monitoring layer keeps the last known rate).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ipa_tasks.forecasting.windows import bucket_maxima


class Forecaster(Protocol):
    name: str

    def predict(self, history: np.ndarray) -> float:
        """Peak request rate expected over the coming horizon."""
        ...


def _checked(history: np.ndarray) -> np.ndarray:
    values = np.asarray(history, dtype=float)
    if values.size == 0:
        raise ValueError("no load history to forecast from")
    if not np.isfinite(values).all():
        raise ValueError("the load history has NaN or infinite values; clean it before forecasting")
    return values


def _with_margin(value: float, margin: float) -> float:
    return max(0.0, float(value)) * (1.0 + margin)


@dataclass(frozen=True)
class LastValue:
    """IPA's ``reactive``: the load of the last second."""

    margin: float = 0.0
    name: str = "last-value"

    def predict(self, history: np.ndarray) -> float:
        return _with_margin(_checked(history)[-1], self.margin)


@dataclass(frozen=True)
class WindowMax:
    """IPA's backup ``max``: the peak of the last ``window_s`` seconds."""

    window_s: int = 120
    margin: float = 0.0
    name: str = "window-max"

    def predict(self, history: np.ndarray) -> float:
        return _with_margin(_checked(history)[-self.window_s :].max(), self.margin)


@dataclass(frozen=True)
class Ewma:
    """Exponentially weighted mean of the bucket maxima (``alpha`` weighs the newest bucket)."""

    alpha: float = 0.5
    bucket_s: int = 10
    margin: float = 0.0
    name: str = "ewma"

    def predict(self, history: np.ndarray) -> float:
        values = _checked(history)
        peaks = bucket_maxima(values, self.bucket_s)
        if peaks.size == 0:
            peaks = np.array([values.max()])
        level = peaks[0]
        for peak in peaks[1:]:
            level = self.alpha * peak + (1 - self.alpha) * level
        return _with_margin(level, self.margin)


@dataclass(frozen=True)
class Holt:
    """Holt's linear trend on the bucket maxima, extrapolated ``horizon_s`` ahead: a rising load is
    forecast to keep rising, which the max of the past cannot do."""

    alpha: float = 0.5
    beta: float = 0.3
    bucket_s: int = 10
    horizon_s: int = 20
    margin: float = 0.0
    name: str = "holt"

    def predict(self, history: np.ndarray) -> float:
        values = _checked(history)
        peaks = bucket_maxima(values, self.bucket_s)
        if peaks.size < 2:
            return _with_margin(values.max(), self.margin)
        level, trend = peaks[1], peaks[1] - peaks[0]
        for peak in peaks[2:]:
            previous = level
            level = self.alpha * peak + (1 - self.alpha) * (level + trend)
            trend = self.beta * (level - previous) + (1 - self.beta) * trend
        steps = self.horizon_s / self.bucket_s
        return _with_margin(level + steps * max(trend, 0.0), self.margin)
