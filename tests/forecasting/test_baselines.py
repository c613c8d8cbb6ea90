"""Baseline forecasters on series whose right answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from ipa_tasks.forecasting.baselines import Ewma, Holt, LastValue, WindowMax

FLAT = np.full(120, 40.0)
RAMP = np.arange(120, dtype=float)  # +1 request/s every second
SPIKE = np.concatenate([np.full(100, 10.0), [90.0], np.full(19, 10.0)])


@pytest.mark.parametrize("forecaster", [LastValue(), WindowMax(), Ewma(), Holt()], ids=lambda f: f.name)
def test_a_flat_load_is_forecast_as_itself(forecaster):
    assert forecaster.predict(FLAT) == pytest.approx(40.0)


def test_last_value_and_window_max_read_the_right_seconds():
    assert LastValue().predict(SPIKE) == 10.0
    assert WindowMax(window_s=30).predict(SPIKE) == 90.0
    assert WindowMax(window_s=10).predict(SPIKE) == 10.0, "the spike is 19 s old"


def test_holt_extrapolates_a_ramp_that_the_past_maximum_cannot():
    # Bucket maxima of the ramp are 9, 19, ..., 119; the next 20 s reach 139.
    assert Holt(alpha=1.0, beta=1.0).predict(RAMP) == pytest.approx(139.0)
    assert WindowMax().predict(RAMP) == 119.0
    assert Holt().predict(RAMP[::-1]) <= RAMP.max(), "a falling load is not extrapolated below zero or up"


def test_ewma_weighs_recent_buckets_by_alpha():
    history = np.concatenate([np.full(10, 10.0), np.full(10, 30.0)])
    assert Ewma(alpha=0.5).predict(history) == pytest.approx(20.0)
    assert Ewma(alpha=1.0).predict(history) == pytest.approx(30.0)


def test_margin_scales_the_forecast_and_bad_history_is_refused():
    assert LastValue(margin=0.2).predict(FLAT) == pytest.approx(48.0)
    with pytest.raises(ValueError, match="no load history"):
        WindowMax().predict(np.array([]))
    with pytest.raises(ValueError, match="NaN"):
        LastValue().predict(np.array([1.0, np.nan]))
