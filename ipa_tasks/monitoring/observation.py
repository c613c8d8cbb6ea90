"""One look at the recent load that the adaptation loop can always act on.

The loop decides every tick, monitoring up or down. :func:`observe` therefore never raises for a source
problem: a source that cannot be read, answers nonsense or has too little of the window is replaced by the
last known rate plus a margin (over-provisioning for a tick is cheaper than violating the SLA on a guess),
and when nothing is known at all the observation is empty and says to keep the running configuration. A few
missing seconds are filled conservatively (:func:`~ipa_tasks.monitoring.gaps.fill_gaps`). The result is a
plain record that travels through Airflow XCom as JSON.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ipa_tasks.monitoring.gaps import fill_gaps
from ipa_tasks.monitoring.source import LoadSource, SourceUnavailable


@dataclass(frozen=True)
class LoadObservation:
    rates: np.ndarray
    """Per-second rates, oldest first, gaps filled (never NaN); empty if nothing is known at all."""
    source: str
    seconds: int
    """The window asked for."""
    missing: int
    """Seconds that had no sample (NaN) before filling; all of them in a fallback, where none is observed."""
    fallback: bool
    """True when the source could not be used and the last known rate (with margin) stands in."""
    message: str
    """Plain words for the task log: what was observed, or what went wrong and what was done instead."""

    def __post_init__(self) -> None:
        # A read-only copy: the observation is a record, and a caller's later edit must not change it.
        rates = np.array(self.rates, dtype=float)
        rates.setflags(write=False)
        object.__setattr__(self, "rates", rates)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LoadObservation):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form for Airflow XCom."""
        return {
            "rates": [float(rate) for rate in self.rates],
            "source": self.source,
            "seconds": self.seconds,
            "missing": self.missing,
            "fallback": self.fallback,
            "message": self.message,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LoadObservation:
        try:
            return cls(
                rates=np.asarray(data["rates"], dtype=float),
                source=str(data["source"]),
                seconds=int(data["seconds"]),
                missing=int(data["missing"]),
                fallback=bool(data["fallback"]),
                message=str(data["message"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a load observation: {exc!r}") from exc


def observe(
    source: LoadSource,
    seconds: int,
    *,
    last_known_rps: float | None,
    margin: float = 0.2,
    max_missing_fraction: float = 0.5,
    now: float | None = None,
) -> LoadObservation:
    """The load of the last ``seconds`` seconds from ``source``, or a stand-in when it cannot be used.

    Falls back to ``last_known_rps * (1 + margin)`` for every second when the source raises
    SourceUnavailable, returns a series of the wrong length or with negative or infinite values, or has no
    sample for more than ``max_missing_fraction`` of the seconds; with ``last_known_rps`` None the rates are
    empty. Otherwise gaps are filled with the larger of their nearest known neighbours. Arguments that are
    the caller's mistake raise ValueError; any other exception from the source is a bug and propagates.
    """
    if seconds < 1:
        raise ValueError(f"the window must be at least one second, got {seconds}")
    if margin < 0:
        raise ValueError(f"the fallback margin must be non-negative, got {margin}")
    if last_known_rps is not None and not (math.isfinite(last_known_rps) and last_known_rps >= 0):
        raise ValueError(f"the last known rate must be a non-negative number, got {last_known_rps}")
    now = time.time() if now is None else now

    def fall_back(reason: str) -> LoadObservation:
        return _fallback(source.name, seconds, reason, last_known_rps, margin)

    try:
        answer = source.rates(seconds, now)
    except SourceUnavailable as exc:
        return fall_back(f"load source unavailable: {exc}")
    rates = np.asarray(answer, dtype=float)
    if rates.shape != (seconds,):
        return fall_back(f"{source.name} returned {rates.size} values for a window of {seconds} s")
    if np.isinf(rates).any():
        return fall_back(f"{source.name} returned infinite rates")
    if (rates < 0).any():
        return fall_back(f"{source.name} returned negative rates (minimum {np.nanmin(rates):.4g})")
    missing = int(np.isnan(rates).sum())
    if missing == seconds:
        return fall_back(f"{source.name} has no sample in the last {seconds} s")
    if missing > max_missing_fraction * seconds:
        return fall_back(
            f"{source.name} has no sample for {missing} of the last {seconds} s "
            f"(more than {max_missing_fraction:.0%} allowed)"
        )
    filled = fill_gaps(rates)
    message = (
        f"observed {seconds} s of load from {source.name}: "
        f"mean {filled.mean():.4g} rps, peak {filled.max():.4g} rps"
    )
    if missing:
        message += f"; {missing} s had no sample and took the larger of their neighbouring values"
    return LoadObservation(filled, source.name, seconds, missing, fallback=False, message=message)


def _fallback(
    source: str, seconds: int, reason: str, last_known_rps: float | None, margin: float
) -> LoadObservation:
    if last_known_rps is None:
        message = f"{reason}; no load has been observed yet, so the running configuration should be kept"
        return LoadObservation(np.empty(0), source, seconds, seconds, fallback=True, message=message)
    stand_in = last_known_rps * (1 + margin)
    message = (
        f"{reason}; using the last known rate {last_known_rps:.4g} rps + {margin:.0%} margin "
        f"= {stand_in:.4g} rps for the {seconds} s window instead"
    )
    return LoadObservation(
        np.full(seconds, stand_in), source, seconds, seconds, fallback=True, message=message
    )
