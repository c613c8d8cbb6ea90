"""The LSTM forecaster learns a periodic load better than the reactive baseline, saves and loads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ipa_tasks.forecasting.baselines import LastValue
from ipa_tasks.forecasting.evaluation import score_forecasts
from ipa_tasks.forecasting.lstm import LstmForecaster, train_lstm
from ipa_tasks.forecasting.windows import training_windows


def wave(seconds: int, period_s: int = 300) -> np.ndarray:
    t = np.arange(seconds)
    return 50 + 30 * np.sin(2 * np.pi * t / period_s)


@pytest.fixture(scope="module")
def trained() -> LstmForecaster:
    inputs, targets = training_windows(wave(6000))
    return train_lstm(inputs, targets, epochs=15)


def test_it_beats_last_value_on_a_wave_it_has_not_seen(trained: LstmForecaster):
    inputs, targets = training_windows(wave(3000)[::-1].copy())  # same period, other phase order
    lstm = score_forecasts(trained.predict_windows(inputs), targets)
    series = wave(3000)[::-1].copy()
    reactive = score_forecasts(
        np.array([LastValue().predict(series[: 120 + 10 * i]) for i in range(len(targets))]), targets
    )
    assert lstm.mape < reactive.mape
    assert lstm.mape < 0.10


def test_short_history_falls_back_to_the_maximum_and_weights_round_trip(trained, tmp_path: Path):
    assert trained.predict(np.array([5.0, 9.0, 7.0])) == 9.0
    history = wave(200)
    trained.save(tmp_path / "lstm.pt")
    loaded = LstmForecaster.load(tmp_path / "lstm.pt")
    assert loaded.predict(history) == pytest.approx(trained.predict(history))


def test_training_is_deterministic():
    inputs, targets = training_windows(wave(1500))
    first = train_lstm(inputs, targets, epochs=2)
    second = train_lstm(inputs, targets, epochs=2)
    assert first.predict_windows(inputs[:5]) == pytest.approx(second.predict_windows(inputs[:5]))
