"""Gap filling errs towards more load: a gap takes the larger neighbour, an end gap its one neighbour."""

from __future__ import annotations

import numpy as np
import pytest

from ipa_tasks.monitoring.gaps import fill_gaps

nan = np.nan


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1, 2, 3], [1, 2, 3]),
        ([nan, 2, nan, nan, 7, 3, nan, 1, nan], [2, 2, 7, 7, 7, 3, 3, 1, 1]),
        ([nan, nan, 4], [4, 4, 4]),
        ([4, nan, nan], [4, 4, 4]),
        ([9, nan, 0], [9, 9, 0]),
        ([0, nan, 9], [0, 9, 9]),
        ([5], [5]),
    ],
)
def test_gaps_take_the_larger_of_their_nearest_known_neighbours(values, expected):
    values = np.array(values, dtype=float)
    np.testing.assert_array_equal(fill_gaps(values), expected)
    assert np.isnan(values).sum() == np.isnan(np.array(values)).sum(), "the input is not changed"


def test_nothing_known_cannot_be_filled():
    with pytest.raises(ValueError, match="no known value"):
        fill_gaps(np.array([nan, nan]))
