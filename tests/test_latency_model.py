"""The fitted latency model and the batch sizes it fills."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ipa_tasks.latency_model import complete_profile, fit_latency, fit_profile
from tests.optimizer.instances import profile_rows


def test_quadratic_is_recovered_exactly():
    b = np.array([1, 2, 4, 8, 16])
    y = 0.01 + 0.02 * b + 0.001 * b**2
    fit = fit_latency(b, y)
    assert fit.coefficients == pytest.approx((0.01, 0.02, 0.001), rel=1e-6)
    assert fit.r2 == pytest.approx(1.0)
    assert fit.max_relative_error < 1e-9


def test_fit_never_decreases_with_batch_even_on_noisy_data():
    b = np.array([1, 2, 4, 8])
    y = np.array([0.10, 0.09, 0.20, 0.41])  # noise makes batch 2 look faster than batch 1
    fit = fit_latency(b, y)
    assert all(c >= 0 for c in fit.coefficients)
    grid = fit.predict(np.arange(1, 9))
    assert np.all(np.diff(grid) >= 0)
    assert fit.r2 < 1.0


def test_two_points_fit_a_line_and_one_point_is_refused():
    fit = fit_latency(np.array([1, 4]), np.array([0.1, 0.4]))
    assert fit.coefficients[2] == 0.0
    assert fit.predict(2) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="two distinct batch sizes"):
        fit_latency(np.array([2, 2]), np.array([0.1, 0.1]))


def test_complete_profile_fills_inside_the_measured_range_only():
    measured = pd.DataFrame(profile_rows("p", "s", "v", 0.1, [1, 4, 8], [1], 0.5))
    completed = complete_profile(measured, {"s": [1, 2, 4, 8, 16]})
    fitted = completed[completed["source"] == "fitted"]
    assert sorted(fitted["batch_size"]) == [2], "16 lies outside the measured 1..8 and is not invented"
    row = fitted.iloc[0]
    assert row["latency_p50_s"] <= row["latency_p95_s"] <= row["latency_p99_s"]
    assert row["throughput_rps"] == pytest.approx(2 / row["latency_p50_s"])
    lat = completed.sort_values("batch_size")["latency_p50_s"].to_numpy()
    assert np.all(np.diff(lat) > 0)


def test_fit_profile_reports_quality_per_group_and_quantile():
    measured = pd.DataFrame(profile_rows("p", "s", "v", 0.1, [1, 2, 4, 8], [1, 2], 0.5))
    fits = fit_profile(measured)
    assert len(fits) == 2 * 3  # two core settings x three quantiles
    assert set(fits["quantile"]) == {"p50", "p95", "p99"}
    assert (fits["r2"] > 0.999).all()
