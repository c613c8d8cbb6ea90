"""The Twitter load trace IPA used: requests per second over 21 days, damped as IPA did.

``../shared/data/twitter-trace/requests_per_second.csv.gz`` has columns ``second, requests``. IPA divided
every value by 8 (``int(x / 8)``) and trained on the first 14 days, validating on the rest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

SECONDS_PER_DAY = 86_400
IPA_DAMPING = 8


class TraceError(ValueError):
    """The trace file cannot be used; the message names the file and what is wrong."""


def load_trace(path: str | Path, damping: int = IPA_DAMPING) -> np.ndarray:
    """Requests per second, one value per second from second 0, ``int(x / damping)`` as IPA did.

    Missing seconds are an error (the series must be contiguous to be windowed by position).
    """
    path = Path(path)
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise TraceError(f"{path}: cannot read the trace: {exc}") from exc
    missing = {"second", "requests"} - set(frame.columns)
    if missing:
        raise TraceError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    seconds = frame["second"].to_numpy()
    if len(seconds) == 0 or not np.array_equal(seconds, np.arange(len(seconds))):
        raise TraceError(f"{path}: 'second' must run 0, 1, 2, ... without gaps")
    requests = frame["requests"].to_numpy(dtype=float)
    if np.isnan(requests).any() or (requests < 0).any():
        raise TraceError(f"{path}: 'requests' must be non-negative numbers")
    return np.floor(requests / damping)


def days(series: np.ndarray, first: int, last: int) -> np.ndarray:
    """Days ``first`` to ``last`` (0-based, ``last`` excluded) of a per-second series."""
    return series[first * SECONDS_PER_DAY : last * SECONDS_PER_DAY]
