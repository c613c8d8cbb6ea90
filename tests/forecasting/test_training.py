"""Training split, held-out windows, vectorised evaluation and the selection rule, on synthetic series."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ipa_tasks.forecasting.baselines import Ewma, Holt, LastValue, WindowMax
from ipa_tasks.forecasting.evaluation import ForecastScore, score_forecasts
from ipa_tasks.forecasting.lstm import LstmForecaster
from ipa_tasks.forecasting.trace import SECONDS_PER_DAY
from ipa_tasks.forecasting.trace_location import default_trace_path
from ipa_tasks.forecasting.training import (
    SPAN_S,
    TrainingConfig,
    baseline_forecasters,
    best_of,
    evaluate,
    forecast_held_out,
    forecast_plot,
    held_out_windows,
    plot_slice,
    select,
    train_candidate,
    train_windows,
)
from ipa_tasks.forecasting.windows import bucket_maxima

GAP_S = 1740
"""Zero seconds at the end of every day, like the Twitter trace's."""
TWO_DAYS = TrainingConfig(train_days=(0, 1), eval_days=(1, 2), epochs=1)


def synthetic_trace(n_days: int = 2, seed: int = 0) -> np.ndarray:
    """A 10-minute wave with noise, integer requests per second, the last 1,740 s of every day zero."""
    t = np.arange(n_days * SECONDS_PER_DAY)
    rng = np.random.default_rng(seed)
    load = np.floor(20 + 10 * np.sin(2 * np.pi * t / 600) + rng.normal(0, 2, len(t))).clip(1)
    for day in range(n_days):
        load[(day + 1) * SECONDS_PER_DAY - GAP_S : (day + 1) * SECONDS_PER_DAY] = 0
    return load


@pytest.fixture(scope="module")
def series() -> np.ndarray:
    return synthetic_trace()


@pytest.fixture(scope="module")
def trained(series):
    return train_candidate(series, replace(TWO_DAYS, epochs=3))


def test_config_refuses_overlapping_or_empty_spans_and_a_trace_too_short():
    with pytest.raises(ValueError, match="overlap"):
        TrainingConfig(train_days=(0, 14), eval_days=(13, 21))
    with pytest.raises(ValueError, match="first < last"):
        TrainingConfig(train_days=(5, 5))
    with pytest.raises(ValueError, match="horizon_s must be at least 1"):
        TrainingConfig(horizon_s=0)
    assert TrainingConfig(train_days=[7, 21], eval_days=[0, 7]).train_days == (7, 21), "lists are accepted"
    with pytest.raises(ValueError, match=r"the trace has 2\.00 days.*need 21"):
        train_windows(synthetic_trace(), TrainingConfig())


def test_training_windows_have_the_zero_seconds_removed_and_held_out_windows_keep_them(series):
    inputs, targets = train_windows(series, TWO_DAYS)
    assert (inputs > 0).all() and (targets > 0).all()
    kept = SECONDS_PER_DAY - GAP_S
    assert len(inputs) == len(range(SPAN_S, kept - 40 + 1, 10)), "one day minus its zero seconds"
    held = held_out_windows(series, TWO_DAYS)
    assert len(held) == len(range(SPAN_S, SECONDS_PER_DAY - 40 + 1, 10))
    assert (held.targets == 0).any(), "the held-out day is used as it is; zero peaks are left to the score"


def test_held_out_windows_pair_the_last_120_s_with_the_peak_of_the_horizon(series):
    held = held_out_windows(series, TrainingConfig(train_days=(0, 1), eval_days=(1, 2), horizon_s=30))
    day = series[SECONDS_PER_DAY:]
    for k in (0, 1, 777, len(held) - 1):
        t = int(held.starts[k])
        assert np.array_equal(held.history(k), day[t - SPAN_S : t])
        assert np.array_equal(held.inputs[k], bucket_maxima(day[t - SPAN_S : t], 10))
        assert held.targets[k] == day[t : t + 30].max()


class Halved:
    """A forecaster without a vectorised form: evaluated through ``predict``."""

    name = "halved"

    def predict(self, history: np.ndarray) -> float:
        return float(history.mean()) / 2


VECTORISED = [
    LastValue(),
    LastValue(margin=0.2),
    WindowMax(),
    WindowMax(window_s=30, margin=0.1),
    WindowMax(window_s=600),
    Ewma(),
    Ewma(alpha=0.2, margin=0.05),
    Holt(horizon_s=40),
    Holt(alpha=0.8, beta=0.1, horizon_s=60, margin=0.2),
    Halved(),
]


@pytest.mark.parametrize("forecaster", VECTORISED, ids=lambda f: repr(f))
def test_vectorised_forecasts_equal_predict_on_the_same_history(series, forecaster):
    held = held_out_windows(series, TWO_DAYS)
    forecasts = forecast_held_out(forecaster, held)
    assert forecasts.shape == held.targets.shape
    # Windows near the day's start, in the middle, and across the zero seconds at the day's end.
    gap_start = (SECONDS_PER_DAY - GAP_S - SPAN_S) // 10
    for k in (0, 1, 2, 4000, gap_start - 3, gap_start, gap_start + 5, len(held) - 1):
        assert forecasts[k] == forecaster.predict(held.history(k)), k


def test_the_lstm_forecasts_the_held_out_windows_as_its_predict_does(series, trained):
    held = held_out_windows(series, TWO_DAYS)
    lstm = LstmForecaster(trained.forecaster.model, trained.forecaster.scale, margin=0.1)
    forecasts = forecast_held_out(lstm, held)
    for k in (0, 100, 5000, len(held) - 1):
        assert forecasts[k] == pytest.approx(lstm.predict(held.history(k)), rel=1e-5)


def test_evaluation_scores_every_forecaster_on_the_same_windows(series, trained):
    held = held_out_windows(series, TWO_DAYS)
    forecasters = {"lstm": trained.forecaster, **baseline_forecasters(40)}
    evaluations = evaluate(forecasters, held)
    assert [e.name for e in evaluations] == ["lstm", "last-value", "window-max", "ewma", "holt"]
    for e in evaluations:
        assert e.score == score_forecasts(e.forecasts, held.targets)
        assert e.score.windows == int((held.targets > 0).sum())
    # On a smooth wave a trained model beats the two forecasters that ignore the shape of the load.
    by_name = {e.name: e.score for e in evaluations}
    assert by_name["lstm"].mape < min(by_name["last-value"].mape, by_name["window-max"].mape)
    figure = forecast_plot(held, evaluations, ["lstm", best_of(evaluations).name])
    (ax,) = figure.axes
    assert len(ax.lines) == 3
    window = plot_slice(held)
    assert 0 < (held.starts[window.stop - 1] - held.starts[window.start]) <= 7200


def score(mape: float, under_rate: float) -> ForecastScore:
    return ForecastScore(mape=mape, under_rate=under_rate, mean_under=0.1, windows=100)


@pytest.mark.parametrize(
    ("candidate", "current", "register", "words"),
    [
        (score(0.30, 0.50), None, True, "no forecaster was registered"),
        (score(0.10, 0.20), score(0.12, 0.20), True, "better"),
        (score(0.10, 0.22), score(0.12, 0.20), True, "at most +0.02"),  # exactly the tolerance
        (score(0.10, 0.10), score(0.12, 0.20), True, "better"),
        (score(0.12, 0.10), score(0.12, 0.20), False, "is not lower"),  # a tie is not better
        (score(0.13, 0.10), score(0.12, 0.20), False, "is not lower"),
        (score(0.10, 0.23), score(0.12, 0.20), False, "under-predicts more often"),
    ],
)
def test_the_selection_rule(candidate, current, register, words):
    decision = select(candidate, current)
    assert decision.register is register
    assert words in decision.reason


def test_training_reports_every_epoch(series):
    seen: list[tuple[int, float]] = []
    config = TrainingConfig(train_days=(0, 1), eval_days=(1, 2), epochs=2)
    trained = train_candidate(series, config, lambda epoch, loss: seen.append((epoch, loss)))
    assert [epoch for epoch, _ in seen] == [1, 2]
    assert trained.losses == tuple(loss for _, loss in seen)
    assert trained.train_windows > 0 and trained.train_seconds > 0


def test_the_default_trace_is_the_shared_one_unless_configured(monkeypatch, tmp_path: Path):
    monkeypatch.delenv("IPA_TWITTER_TRACE", raising=False)
    expected = Path(__file__).resolve().parents[3] / "shared/data/twitter-trace/requests_per_second.csv.gz"
    assert default_trace_path() == expected
    monkeypatch.setenv("IPA_TWITTER_TRACE", str(tmp_path / "mine.csv"))
    assert default_trace_path() == tmp_path / "mine.csv"
