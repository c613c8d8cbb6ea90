"""A recorded per-second load replayed as if it were live: IPA's "teleport mode".

Lets the adaptation loop run against the Twitter trace (damped as IPA did, from
:func:`ipa_tasks.forecasting.trace.load_trace`) without generating real requests: the rate at unix second
``t`` is ``series[start + (t - t0)]``, where ``t0`` (taken as the whole second containing it) is when the
replay began. Seconds before ``t0`` were never played and are gaps; a window that reaches past the end of
the series is :class:`~ipa_tasks.monitoring.source.SourceUnavailable`, since the replay is over.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np

from ipa_tasks.forecasting.trace import load_trace
from ipa_tasks.monitoring.source import SourceUnavailable, window_seconds


class TraceReplaySource:
    def __init__(self, series: np.ndarray, *, t0: float, start: int = 0, name: str = "trace replay") -> None:
        values = np.array(series, dtype=float)  # a copy: the caller's array may change, the replay must not
        if values.ndim != 1 or values.size == 0:
            raise ValueError(f"a trace replay needs a non-empty 1-D series, got shape {values.shape}")
        if not 0 <= start < values.size:
            raise ValueError(f"the replay start {start} is outside the series' {values.size} seconds")
        self._series = values
        self._t0 = math.floor(t0)
        self._start = start
        self.name = name

    def rates(self, seconds: int, now: float) -> np.ndarray:
        positions = self._start + (window_seconds(seconds, now) - self._t0)
        if positions[-1] >= self._series.size:
            raise SourceUnavailable(
                f"{self.name} has ended: the series has {self._series.size} seconds and the window reaches "
                f"second {positions[-1]}"
            )
        rates = np.full(seconds, np.nan)
        played = positions >= self._start
        rates[played] = self._series[positions[played]]
        return rates


@functools.lru_cache(maxsize=2)
def cached_trace(path: Path, damping: int) -> np.ndarray:
    """:func:`load_trace`, kept for the life of the process: the 21-day trace takes about a second to parse
    and a long-running loop would otherwise parse it every tick."""
    series = load_trace(path, damping)
    series.setflags(write=False)  # shared between callers
    return series
