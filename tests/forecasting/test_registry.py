"""The forecaster's MLflow run and registry: register on the first training, only when better afterwards,
load the champion from a cache, and the names the adaptation loop asks for."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from ipa_tasks.forecasting.baselines import Ewma, Holt, LastValue, WindowMax
from ipa_tasks.forecasting.lstm import LstmForecaster, PeakLstm
from ipa_tasks.forecasting.registry import (
    CHAMPION,
    FORECASTER_MODEL,
    champion_version,
    evaluate_and_register,
    forecaster_by_name,
    load_registered_forecaster,
)
from ipa_tasks.forecasting.training import TrainedCandidate, train_candidate
from ipa_tasks.settings import current_settings
from ipa_tasks.tracking import mlflow_client
from tests.forecasting.test_training import TWO_DAYS, synthetic_trace


@pytest.fixture(scope="module")
def series() -> np.ndarray:
    return synthetic_trace()


@pytest.fixture(scope="module")
def trained(series) -> TrainedCandidate:
    return train_candidate(series, TWO_DAYS)


@pytest.fixture(scope="module")
def untrained() -> TrainedCandidate:
    """An LSTM that was never trained: far worse than any trained one."""
    torch.manual_seed(0)
    return TrainedCandidate(LstmForecaster(PeakLstm(), scale=30.0), 0.0, 0, ())


@pytest.fixture
def model_name() -> str:
    """A registered-model name of the test's own in the session's store."""
    return f"test-forecaster-{uuid.uuid4().hex[:8]}"


def register(series, candidate, name, cache_dir: Path, tracking_uri=None, config=TWO_DAYS):
    return evaluate_and_register(
        tracking_uri or current_settings().tracking_uri,
        series,
        config,
        candidate,
        source="synthetic",
        damping=8,
        cache_dir=cache_dir,
        name=name,
        log=lambda _: None,
    )


def test_the_first_training_registers_and_the_same_training_again_does_not(
    series, trained, model_name, tmp_path: Path
):
    uri = current_settings().tracking_uri
    client = mlflow_client(uri)
    first = register(series, trained, model_name, tmp_path / "cache")
    assert first.registered and first.version == "1"
    assert "no forecaster was registered" in first.reason
    assert str(champion_version(client, model_name).version) == "1"

    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["ipa.registered"] == "true" and run.data.tags["ipa.registered_version"] == "1"
    assert run.data.params["horizon_s"] == "40" and run.data.params["train_days"] == "0,1"
    for key in ("lstm", "last_value", "window_max", "ewma", "holt"):
        assert {f"mape_{key}", f"under_rate_{key}", f"mean_under_{key}"} <= set(run.data.metrics), key
    assert "mape_champion" not in run.data.metrics, "there was nothing to re-score"
    files = {f.path for f in client.list_artifacts(first.run_id)}
    assert {"comparison.csv", "forecast_vs_actual.png", "model"} <= files
    assert {f.path for f in client.list_artifacts(first.run_id, "model")} == {
        "model/lstm.pt",
        "model/forecaster.json",
    }
    (version,) = client.search_model_versions(f"name = '{model_name}'")
    assert version.run_id == first.run_id and version.tags["ipa.horizon_s"] == "40"
    assert float(version.tags["ipa.mape"]) == pytest.approx(run.data.metrics["mape_lstm"], abs=1e-6)

    # Same seed, same data: the same model, re-scored champion ties, so nothing changes.
    again = register(series, train_candidate(series, TWO_DAYS), model_name, tmp_path / "cache")
    assert not again.registered and again.version == "1"
    assert "is not lower" in again.reason
    rerun = client.get_run(again.run_id)
    assert rerun.data.tags["ipa.registered"] == "false" and rerun.data.tags["ipa.champion_version"] == "1"
    assert rerun.data.metrics["mape_champion"] == pytest.approx(rerun.data.metrics["mape_lstm"])
    assert len(client.search_model_versions(f"name = '{model_name}'")) == 1
    assert str(champion_version(client, model_name).version) == "1"


def test_a_better_candidate_becomes_the_champion(series, trained, untrained, model_name, tmp_path: Path):
    client = mlflow_client(current_settings().tracking_uri)
    assert register(series, untrained, model_name, tmp_path).registered
    better = register(series, trained, model_name, tmp_path)
    assert better.registered and better.version == "2"
    assert "better: lower MAPE" in better.reason
    assert champion_version(client, model_name).run_id == better.run_id
    # The poor model cannot win back: the champion is re-scored, not trusted from its old tags.
    worse = register(series, untrained, model_name, tmp_path)
    assert not worse.registered and str(champion_version(client, model_name).version) == "2"


def test_the_champion_is_downloaded_once_and_then_read_from_the_cache(
    series, trained, model_name, tmp_path: Path, monkeypatch
):
    import mlflow.artifacts

    uri = current_settings().tracking_uri
    cache = tmp_path / "cache"
    assert load_registered_forecaster(uri, cache, model_name) is None, "nothing registered yet"
    register(series, trained, model_name, tmp_path / "registering")
    first = load_registered_forecaster(uri, cache, model_name)
    assert isinstance(first, LstmForecaster)
    assert sorted(p.name for p in (cache / "1").iterdir()) == ["forecaster.json", "lstm.pt"]

    def no_download(*args, **kwargs):
        raise AssertionError("a cached version must not be downloaded again")

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", no_download)
    cached = load_registered_forecaster(uri, cache, model_name)
    history = synthetic_trace(1)[:120]
    assert cached.predict(history) == pytest.approx(trained.forecaster.predict(history))
    assert cached.predict(history) == first.predict(history)

    # A cache folder left by another store's version 1 is not trusted: it is downloaded again.
    (cache / "1" / "forecaster.json").write_text('{"run_id": "someone-else"}')
    with pytest.raises(AssertionError, match="must not be downloaded again"):
        load_registered_forecaster(uri, cache, model_name)


def test_forecaster_by_name_builds_baselines_and_refuses_unknown_names(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'empty.db'}"
    common = {"horizon_s": 60, "tracking_uri": uri, "cache_dir": tmp_path / "cache", "margin": 0.2}
    expected = {"last-value": LastValue, "window-max": WindowMax, "ewma": Ewma, "holt": Holt}
    for name, kind in expected.items():
        forecaster, note = forecaster_by_name(name, **common)
        assert isinstance(forecaster, kind) and forecaster.margin == 0.2 and note == ""
    assert forecaster_by_name("holt", **common)[0].horizon_s == 60
    with pytest.raises(ValueError, match="lstm, last-value, window-max, ewma, holt"):
        forecaster_by_name("arima", **common)


def test_lstm_falls_back_to_window_max_without_a_champion_and_uses_it_with_one(
    series, trained, tmp_path: Path, monkeypatch
):
    import mlflow.artifacts

    # The default model name, in a store of the test's own (the DAG test registers it in the session's).
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = {"tracking_uri": uri, "cache_dir": tmp_path / "cache", "margin": 0.1}
    fallback, note = forecaster_by_name("lstm", horizon_s=40, **common)
    assert isinstance(fallback, WindowMax) and fallback.margin == 0.1
    assert f"no LSTM is registered as {FORECASTER_MODEL}@{CHAMPION}" in note and "window-max" in note

    register(series, trained, FORECASTER_MODEL, tmp_path / "registering", tracking_uri=uri)

    def unreachable(**kwargs):
        raise OSError("gone")

    with monkeypatch.context() as patched:
        patched.setattr(mlflow.artifacts, "download_artifacts", unreachable)
        broken, note = forecaster_by_name("lstm", horizon_s=40, **common)
    assert isinstance(broken, WindowMax) and "could not be loaded (gone)" in note

    lstm, note = forecaster_by_name("lstm", horizon_s=40, **common)
    assert isinstance(lstm, LstmForecaster) and note == ""
    history = series[:120]
    assert lstm.predict(history) == pytest.approx(1.1 * trained.forecaster.predict(history))
    other, note = forecaster_by_name("lstm", horizon_s=30, **common)
    assert isinstance(other, LstmForecaster)
    assert "next 40 s, not 30 s" in note


def test_asking_for_a_baseline_does_not_import_torch():
    # The adaptation loop imports this module every 30 s in a fresh task process; torch costs ~1.5 s.
    code = (
        "import sys; from pathlib import Path; "
        "from ipa_tasks.forecasting.registry import forecaster_by_name; "
        "forecaster_by_name('holt', horizon_s=40, tracking_uri='sqlite:///unused.db', cache_dir=Path('.')); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-1000:]


def test_within_the_recheck_interval_the_champion_comes_from_the_cache_without_asking_mlflow(
    series, trained, untrained, model_name, tmp_path: Path, monkeypatch
):
    from ipa_tasks.forecasting import registry

    uri = current_settings().tracking_uri
    cache = tmp_path / "cache"
    register(series, untrained, model_name, cache)
    assert registry.load_champion(uri, cache, model_name, recheck_s=300).version == "1"

    def no_registry(*args, **kwargs):
        raise AssertionError("the registry must not be asked within the recheck interval")

    monkeypatch.setattr(registry, "champion_version", no_registry)
    assert registry.load_champion(uri, cache, model_name, recheck_s=300).version == "1"
    with pytest.raises(AssertionError, match="must not be asked"):
        registry.load_champion(uri, cache, model_name, recheck_s=0)  # no interval: always asks
    monkeypatch.undo()

    # Registering a better champion through the same cache forgets the pointer: picked up at once.
    assert register(series, trained, model_name, cache).registered
    assert registry.load_champion(uri, cache, model_name, recheck_s=300).version == "2"
    # Another store's pointer is never taken for this one.
    other_store = f"sqlite:///{tmp_path / 'other.db'}"
    assert registry.load_champion(other_store, cache, model_name, recheck_s=300) is None


def test_a_registry_outage_keeps_the_champion_last_looked_up(
    series, untrained, model_name, tmp_path, monkeypatch
):
    from ipa_tasks.forecasting import registry

    uri = current_settings().tracking_uri
    cache = tmp_path / "cache"
    register(series, untrained, model_name, cache)
    options = {"horizon_s": 40, "tracking_uri": uri, "cache_dir": cache, "model_name": model_name}
    forecaster, note = forecaster_by_name("lstm", **options)
    assert isinstance(forecaster, LstmForecaster) and note == ""

    def outage(*args, **kwargs):
        raise ConnectionError("registry down")

    monkeypatch.setattr(registry, "champion_version", outage)
    forecaster, note = forecaster_by_name("lstm", **options, margin=0.1)
    assert isinstance(forecaster, LstmForecaster) and forecaster.margin == 0.1
    assert "could not be asked (registry down); using the champion it named last, version 1" in note


def test_a_champion_that_cannot_be_loaded_is_not_replaced_blindly(
    series, trained, untrained, model_name, tmp_path, monkeypatch
):
    from ipa_tasks.forecasting import registry

    register(series, untrained, model_name, tmp_path)

    def broken(*args, **kwargs):
        raise OSError("artifact store unreachable")

    monkeypatch.setattr(registry, "load_champion", broken)
    outcome = register(series, trained, model_name, tmp_path)
    assert (
        not outcome.registered
        and "could not be loaded (OSError: artifact store unreachable)" in outcome.reason
    )
    monkeypatch.undo()
    client = mlflow_client(current_settings().tracking_uri)
    assert str(champion_version(client, model_name).version) == "1"
