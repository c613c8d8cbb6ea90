"""IPA's forecasting windows: the recent past as bucket maxima, the target as the peak of the horizon.

At decision time ``t`` the history is the last ``buckets * bucket_s`` seconds cut into ``bucket_s``-second
buckets, each replaced by its maximum (IPA: 12 buckets of 10 s); the target is the maximum load over
``(t, t + horizon_s]`` (IPA: the next 20 s). Windows slide by ``stride_s``.
"""

from __future__ import annotations

import numpy as np


def bucket_maxima(history: np.ndarray, bucket_s: int) -> np.ndarray:
    """The maximum of each consecutive ``bucket_s``-second bucket, aligned to the end of ``history``
    (an incomplete oldest bucket is dropped)."""
    usable = (len(history) // bucket_s) * bucket_s
    if usable == 0:
        return np.empty(0)
    return history[len(history) - usable :].reshape(-1, bucket_s).max(axis=1)


def training_windows(
    series: np.ndarray, *, buckets: int = 12, bucket_s: int = 10, horizon_s: int = 20, stride_s: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (one row of ``buckets`` bucket maxima per window) and targets (peak of the next horizon)."""
    span = buckets * bucket_s
    starts = range(span, len(series) - horizon_s + 1, stride_s)
    inputs = np.array([bucket_maxima(series[t - span : t], bucket_s) for t in starts]).reshape(-1, buckets)
    targets = np.array([series[t : t + horizon_s].max() for t in starts])
    return inputs, targets
