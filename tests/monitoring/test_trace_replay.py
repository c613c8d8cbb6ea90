"""TraceReplaySource plays a known series as if live: second t is series[start + (t - t0)]."""

from __future__ import annotations

import numpy as np
import pytest

from ipa_tasks.monitoring import SourceUnavailable, TraceReplaySource

T0 = 1_764_000_000
SERIES = np.arange(100.0)  # the value at position i is i
nan = np.nan


def replay(**overrides) -> TraceReplaySource:
    return TraceReplaySource(SERIES, **{"t0": T0 + 0.6, "start": 10, **overrides})


def test_the_rate_at_a_second_is_the_series_at_start_plus_its_offset_from_t0():
    # now T0+20.2: the window of 5 s is T0+15 .. T0+19, positions 25 .. 29.
    np.testing.assert_array_equal(replay().rates(5, T0 + 20.2), [25, 26, 27, 28, 29])


def test_seconds_before_the_replay_began_are_gaps():
    np.testing.assert_array_equal(replay().rates(5, T0 + 2.9), [nan, nan, nan, 10, 11])


def test_the_replay_ends_with_the_series():
    np.testing.assert_array_equal(replay().rates(2, T0 + 90.0), [98, 99])
    with pytest.raises(SourceUnavailable, match="trace replay has ended: the series has 100 seconds"):
        replay().rates(2, T0 + 91.0)


def test_the_replay_is_a_copy_and_bad_series_are_refused():
    series = SERIES.copy()
    source = TraceReplaySource(series, t0=T0, name="my replay")
    series[:] = -1
    np.testing.assert_array_equal(source.rates(3, T0 + 3), [0, 1, 2])
    assert source.name == "my replay"
    with pytest.raises(ValueError, match="non-empty 1-D series"):
        TraceReplaySource(np.empty(0), t0=T0)
    with pytest.raises(ValueError, match="non-empty 1-D series"):
        TraceReplaySource(np.ones((2, 2)), t0=T0)
    with pytest.raises(ValueError, match="start 100 is outside the series' 100 seconds"):
        TraceReplaySource(SERIES, t0=T0, start=100)
