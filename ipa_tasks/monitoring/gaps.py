"""Filling the seconds a load source has no sample for, erring towards more load.

A missing second is most often a scrape that did not land or a second the router was busy in; assuming it
was quiet would under-provision exactly when the load is high, so a gap takes the larger of the known values
on either side of it. A gap at either end has one neighbour and takes that.
"""

from __future__ import annotations

import numpy as np


def fill_gaps(values: np.ndarray) -> np.ndarray:
    """``values`` with every NaN replaced by the larger of its nearest known neighbours (the one neighbour
    for a leading or trailing gap). Raises ValueError when no value is known."""
    values = np.asarray(values, dtype=float)
    known = ~np.isnan(values)
    if not known.any():
        raise ValueError("no known value to fill the gaps from")
    positions = np.arange(values.size)
    # Index of the nearest known value at or before / at or after each position (-1 / size where none).
    before = np.maximum.accumulate(np.where(known, positions, -1))
    after = np.minimum.accumulate(np.where(known, positions, values.size)[::-1])[::-1]
    left = np.where(before >= 0, values[np.clip(before, 0, None)], np.nan)
    right = np.where(after < values.size, values[np.clip(after, None, values.size - 1)], np.nan)
    # fmax takes the known side where the other is NaN, which is what the ends need.
    return np.where(known, values, np.fmax(left, right))
