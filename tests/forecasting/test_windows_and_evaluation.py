"""IPA's windows, the trace loader and forecast scores, on known series and the real trace."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ipa_tasks.forecasting.evaluation import score_forecasts
from ipa_tasks.forecasting.trace import SECONDS_PER_DAY, TraceError, days, load_trace
from ipa_tasks.forecasting.windows import bucket_maxima, training_windows

TRACE = (
    Path(__file__).resolve().parents[3] / "shared" / "data" / "twitter-trace" / "requests_per_second.csv.gz"
)


def test_bucket_maxima_align_to_the_newest_second():
    assert bucket_maxima(np.arange(25.0), 10).tolist() == [14.0, 24.0]
    assert bucket_maxima(np.arange(5.0), 10).size == 0


def test_training_windows_pair_twelve_buckets_with_the_next_peak():
    series = np.arange(200, dtype=float)
    inputs, targets = training_windows(series)
    assert inputs.shape[1] == 12
    assert inputs[0].tolist() == [float(9 + 10 * k) for k in range(12)]
    assert targets[0] == 139.0, "the peak of seconds 120..139"
    assert len(inputs) == len(targets) == len(range(120, 200 - 20 + 1, 10))


def test_scores_separate_under_from_over_prediction():
    score = score_forecasts(np.array([90.0, 120.0, 100.0]), np.array([100.0, 100.0, 100.0]))
    assert score.mape == pytest.approx(0.1)
    assert score.under_rate == pytest.approx(1 / 3) and score.mean_under == pytest.approx(0.1)
    with pytest.raises(ValueError):
        score_forecasts(np.array([1.0]), np.array([0.0]))


def test_a_broken_trace_names_the_file_and_the_problem(tmp_path: Path):
    bad = tmp_path / "trace.csv"
    bad.write_text("second,requests\n0,5\n2,7\n")
    with pytest.raises(TraceError, match=r"trace\.csv: 'second' must run"):
        load_trace(bad)


@pytest.mark.skipif(not TRACE.exists(), reason=f"the Twitter trace is not at {TRACE}")
def test_the_twitter_trace_loads_damped_as_ipa_did():
    series = load_trace(TRACE)
    assert len(series) == 1_899_061
    assert series[:4].tolist() == [6.0, 6.0, 6.0, 6.0]  # 52, 55, 48, 55 divided by 8, floored
    assert len(days(series, 0, 14)) == 14 * SECONDS_PER_DAY
