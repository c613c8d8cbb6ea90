"""The load forecaster in MLflow: one tracked run per training, the registered model, and loading it.

Run layout (experiment ``ipa-forecasting``, tag ``ipa.kind = forecaster-training``)::

    params    train_days, eval_days ("first,last"), horizon_s, epochs, seed, batch_size, stride_s, source
              (the trace file), damping, model_name
    metrics   mape_<f>, under_rate_<f>, mean_under_<f>, eval_seconds_<f> for f in lstm, last_value,
              window_max, ewma, holt and champion (the registered model re-scored, if there is one);
              train_seconds, train_windows, eval_windows; train_loss with step = epoch
    tags      ipa.registered = true|false, ipa.registration_reason (plain words), ipa.champion_version
              (the version compared against, if any), ipa.registered_version (if registered)
    artifacts comparison.csv, forecast_vs_actual.png (2 h of a held-out day: the LSTM and the best
              baseline), model/lstm.pt (``LstmForecaster.save``) and model/forecaster.json (horizon,
              days, seed, run id)

The registered model is ``ipa-load-forecaster``. A run registers a new version (source: its ``model/``
artifacts; tags ``ipa.horizon_s`` and the held-out scores) only when the selection rule
(:func:`ipa_tasks.forecasting.training.select`) says the candidate beats the current ``champion``,
re-scored on the same held-out windows; the alias ``champion`` then moves to the new version.

:func:`load_registered_forecaster` is what the adaptation loop calls every 30 s: one registry call (the
alias), and the version's files are downloaded once into ``<cache_dir>/<version>/`` and reused.
Importing this module does not import torch (only loading an LSTM does), so asking for a baseline is cheap.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ipa_tasks.atomic_files import atomic_write_text
from ipa_tasks.forecasting.baselines import Forecaster, WindowMax
from ipa_tasks.forecasting.names import FORECASTERS
from ipa_tasks.forecasting.trace import load_trace
from ipa_tasks.forecasting.training import (
    BASELINE_NAMES,
    Decision,
    Evaluation,
    Log,
    TrainedCandidate,
    TrainingConfig,
    baseline_forecasters,
    best_of,
    comparison_frame,
    evaluate,
    forecast_plot,
    held_out_windows,
    scores_table,
    select,
)
from ipa_tasks.tracking import experiment_id_for, mlflow_client

if TYPE_CHECKING:
    import numpy as np
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from ipa_tasks.forecasting.lstm import LstmForecaster
    from ipa_tasks.settings import Settings

FORECASTER_MODEL = "ipa-load-forecaster"
EXPERIMENT = "ipa-forecasting"
CHAMPION = "champion"
TRAINING_KIND = "forecaster-training"
MODEL_DIR = "model"
MODEL_FILE = "lstm.pt"
INFO_FILE = "forecaster.json"
CHAMPION_FILE = "champion.json"
FORECASTER_NAMES = FORECASTERS


def default_cache_dir(settings: Settings) -> Path:
    """Where registered forecasters are cached by default: ``<IPA_HOME>/forecasters/registry-cache``."""
    return settings.home / "forecasters" / "registry-cache"


def _metric_key(name: str) -> str:
    return name.replace("-", "_")


def champion_version(client: MlflowClient, name: str = FORECASTER_MODEL) -> ModelVersion | None:
    """The version the ``champion`` alias points at; None if the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as exc:
        # RESOURCE_DOES_NOT_EXIST: no such model; INVALID_PARAMETER_VALUE: the model has no such alias.
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def _cached_files(version: ModelVersion, tracking_uri: str, cache_dir: Path) -> Path:
    """``<cache_dir>/<version>/`` holding the version's ``lstm.pt``, downloaded only if not there yet."""
    from mlflow import artifacts

    directory = cache_dir / str(version.version)
    if _cache_holds(directory, version.run_id):
        return directory
    # Absent, incomplete, or the same version number from another store (same cache, other tracking URI).
    shutil.rmtree(directory, ignore_errors=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{version.version}-", dir=cache_dir))
    try:
        downloaded = Path(
            artifacts.download_artifacts(
                artifact_uri=version.source, dst_path=str(scratch), tracking_uri=tracking_uri
            )
        )
        if not (downloaded / MODEL_FILE).is_file():
            raise FileNotFoundError(f"{version.source} has no {MODEL_FILE}")
        try:
            # Atomic: a reader never sees a half-written version folder.
            os.replace(downloaded, directory)
        except OSError:
            # Unless a concurrent download got there first, this is a real error.
            if not _cache_holds(directory, version.run_id):
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return directory


def _cache_holds(directory: Path, run_id: str) -> bool:
    info = directory / INFO_FILE
    if not ((directory / MODEL_FILE).is_file() and info.is_file()):
        return False
    try:
        return json.loads(info.read_text()).get("run_id") == run_id
    except ValueError:
        return False


@dataclass(frozen=True)
class LoadedForecaster:
    forecaster: LstmForecaster
    version: str
    info: dict[str, Any]
    """``forecaster.json``: horizon_s, train_days, eval_days, seed, epochs, run_id."""


def load_champion(
    tracking_uri: str, cache_dir: Path, name: str = FORECASTER_MODEL, *, recheck_s: float = 0.0
) -> LoadedForecaster | None:
    """The ``champion`` version with what was recorded with it; None when nothing is registered.

    With ``recheck_s`` > 0, a champion resolved less than that long ago (against the same store) is taken
    from the cache without asking the registry: the adaptation loop runs every 30 s in fresh processes,
    and importing MLflow to ask costs more than the rest of the forecast. A newly registered champion is
    then picked up within ``recheck_s`` (at once on the machine that registered it, see
    :func:`evaluate_and_register`).
    """
    cache_dir = Path(cache_dir)
    if recheck_s > 0:
        remembered = _remembered_champion(cache_dir, tracking_uri, name, recheck_s)
        if remembered is not None:
            version = remembered["version"]
            return None if version is None else _loaded(cache_dir / str(version), str(version))
    found = champion_version(mlflow_client(tracking_uri), name)
    if found is None:
        _remember_champion(cache_dir, tracking_uri, name, None, None)
        return None
    directory = _cached_files(found, tracking_uri, cache_dir)
    _remember_champion(cache_dir, tracking_uri, name, str(found.version), found.run_id)
    return _loaded(directory, str(found.version))


def _loaded(directory: Path, version: str) -> LoadedForecaster:
    from ipa_tasks.forecasting.lstm import LstmForecaster

    info = json.loads((directory / INFO_FILE).read_text())
    return LoadedForecaster(LstmForecaster.load(directory / MODEL_FILE), version, info)


def _remembered_champion(cache_dir: Path, tracking_uri: str, name: str, recheck_s: float) -> dict | None:
    """The champion as last resolved, if that was under ``recheck_s`` ago against the same store and its
    files are still cached (``{"version": None}`` when nothing was registered then); else None."""
    try:
        data = json.loads((cache_dir / CHAMPION_FILE).read_text())
        age = time.time() - float(data["checked_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if data.get("tracking_uri") != tracking_uri or data.get("name") != name or not 0 <= age < recheck_s:
        return None
    version = data.get("version")
    if version is not None and not _cache_holds(cache_dir / str(version), data.get("run_id", "")):
        return None
    return data


def _remember_champion(
    cache_dir: Path, tracking_uri: str, name: str, version: str | None, run_id: str | None
) -> None:
    record = {"tracking_uri": tracking_uri, "name": name, "version": version, "run_id": run_id}
    with contextlib.suppress(OSError):  # only a cache: the next load asks the registry again
        atomic_write_text(cache_dir / CHAMPION_FILE, json.dumps({**record, "checked_at": time.time()}))


def forget_champion(cache_dir: Path) -> None:
    """Make the next load ask the registry (after a new champion was registered)."""
    (Path(cache_dir) / CHAMPION_FILE).unlink(missing_ok=True)


def load_registered_forecaster(
    tracking_uri: str, cache_dir: Path, name: str = FORECASTER_MODEL
) -> LstmForecaster | None:
    """The ``champion`` version's LSTM, downloaded once into ``cache_dir/<version>/`` and reused (one
    registry call and a local file read when cached); None when nothing is registered."""
    loaded = load_champion(tracking_uri, cache_dir, name)
    return None if loaded is None else loaded.forecaster


def forecaster_by_name(
    name: str,
    *,
    horizon_s: int,
    tracking_uri: str,
    cache_dir: Path,
    margin: float = 0.0,
    recheck_s: float = 0.0,
    model_name: str = FORECASTER_MODEL,
) -> tuple[Forecaster, str]:
    """The forecaster the adaptation loop asked for, and a plain-words note ("" if there is nothing to say).

    ``lstm`` is the registered champion; with nothing registered, or if it cannot be loaded, it falls back
    to ``window-max`` (IPA's backup predictor) and the note says why. The baselines are built here; ``holt``
    extrapolates over ``horizon_s``. ``margin`` scales every forecast by ``1 + margin``.
    """
    if name in BASELINE_NAMES:
        return baseline_forecasters(horizon_s, margin)[name], ""
    if name != "lstm":
        raise ValueError(f"unknown forecaster {name!r}; choose one of {', '.join(FORECASTER_NAMES)}")
    try:
        loaded = load_champion(tracking_uri, cache_dir, model_name, recheck_s=recheck_s)
    except Exception as exc:  # the loop must keep deciding: a registry outage is not a reason to stop
        remembered = _remembered_champion(Path(cache_dir), tracking_uri, model_name, math.inf)
        if remembered is not None and remembered["version"] is not None:
            version = str(remembered["version"])
            forecaster = _loaded(Path(cache_dir) / version, version).forecaster
            return replace(forecaster, margin=margin), (
                f"the model registry could not be asked ({exc}); using the champion it named last, "
                f"version {version}, from the cache"
            )
        return WindowMax(margin=margin), (
            f"the registered LSTM ({FORECASTER_MODEL}@{CHAMPION}) could not be loaded ({exc}); "
            "using window-max instead"
        )
    if loaded is None:
        return WindowMax(margin=margin), (
            f"no LSTM is registered as {FORECASTER_MODEL}@{CHAMPION} yet (run the ipa_train_forecaster DAG); "
            "using window-max instead"
        )
    note = ""
    trained_for = loaded.info.get("horizon_s")
    if trained_for is not None and int(trained_for) != horizon_s:
        note = (
            f"the registered LSTM (version {loaded.version}) forecasts the peak of the next {trained_for} s, "
            f"not {horizon_s} s; retrain with horizon_s={horizon_s} for a forecast of that horizon"
        )
    return replace(loaded.forecaster, margin=margin), note


@dataclass(frozen=True)
class TrainingOutcome:
    run_id: str
    registered: bool
    reason: str
    version: str | None
    """The new version if registered, else the champion's (None if nothing is registered)."""
    evaluations: list[Evaluation]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "registered": self.registered,
            "reason": self.reason,
            "version": self.version,
            "scores": {
                e.name: {
                    "mape": e.score.mape,
                    "under_rate": e.score.under_rate,
                    "mean_under": e.score.mean_under,
                }
                for e in self.evaluations
            },
        }


def _score_metrics(evaluations: list[Evaluation]) -> dict[str, float]:
    metrics = {}
    for e in evaluations:
        key = _metric_key(e.name)
        metrics[f"mape_{key}"] = e.score.mape
        metrics[f"under_rate_{key}"] = e.score.under_rate
        metrics[f"mean_under_{key}"] = e.score.mean_under
        metrics[f"eval_seconds_{key}"] = e.seconds
    return metrics


def evaluate_and_register(
    tracking_uri: str,
    series: np.ndarray,
    config: TrainingConfig,
    candidate: TrainedCandidate,
    *,
    source: str,
    damping: int,
    cache_dir: Path,
    name: str = FORECASTER_MODEL,
    experiment: str = EXPERIMENT,
    log: Log = print,
) -> TrainingOutcome:
    """Score the candidate, the baselines and the re-scored champion on the held-out windows, log the run,
    and register the candidate as the new champion if the selection rule says it is better."""
    from mlflow.entities import Metric, Param, RunTag

    held = held_out_windows(series, config)
    forecasters: dict[str, Forecaster] = {
        "lstm": candidate.forecaster,
        **baseline_forecasters(config.horizon_s),
    }
    champion, unloadable = None, ""
    try:
        champion = load_champion(tracking_uri, cache_dir, name)
    except Exception as exc:  # the run is still logged; only the comparison is impossible
        unloadable = f"{type(exc).__name__}: {exc}"
    if champion is not None:
        forecasters["champion"] = champion.forecaster
    evaluations = evaluate(forecasters, held)
    by_name = {e.name: e for e in evaluations}
    if unloadable:
        # Possibly a passing outage: replacing a champion that could not be compared might replace a
        # better one. An operator who wants the candidate in fixes or removes the alias first.
        decision = Decision(
            False,
            f"the registered {name}@{CHAMPION} could not be loaded ({unloadable}), so the candidate cannot "
            "be compared with it: not registered (fix or remove the alias to let a new model in)",
        )
    else:
        decision = select(by_name["lstm"].score, by_name["champion"].score if champion else None)
    reason = decision.reason + (f" (version {champion.version})" if champion else "")
    if champion is not None and champion.info.get("horizon_s") != config.horizon_s:
        reason += f"; the registered one was trained for a {champion.info.get('horizon_s')}-s horizon"
    log(f"held-out days {list(config.eval_days)}, {len(held):,} windows, horizon {config.horizon_s} s:")
    log(scores_table(evaluations))

    client = mlflow_client(tracking_uri)
    run = client.create_run(
        experiment_id_for(client, experiment, tracking_uri),
        run_name=f"train lstm h{config.horizon_s}s {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}",
        tags={"ipa.kind": TRAINING_KIND, **({"ipa.champion_version": champion.version} if champion else {})},
    )
    run_id = run.info.run_id
    try:
        params = {**config.to_params(), "source": source, "damping": str(damping), "model_name": name}
        now = int(time.time() * 1000)
        summary = {
            "train_seconds": candidate.train_seconds,
            "train_windows": float(candidate.train_windows),
            "eval_windows": float(len(held)),
            **_score_metrics(evaluations),
        }
        metrics = [Metric(key, float(value), now, 0) for key, value in summary.items()]
        metrics += [
            Metric("train_loss", float(loss), now, step) for step, loss in enumerate(candidate.losses, 1)
        ]
        client.log_batch(run_id, metrics=metrics, params=[Param(k, v) for k, v in params.items()])
        client.log_text(run_id, comparison_frame(evaluations).to_csv(index=False), "comparison.csv")
        best = best_of(evaluations)
        client.log_figure(
            run_id, forecast_plot(held, evaluations, ["lstm", best.name]), "forecast_vs_actual.png"
        )
        info = {
            "horizon_s": config.horizon_s,
            "train_days": list(config.train_days),
            "eval_days": list(config.eval_days),
            "epochs": config.epochs,
            "seed": config.seed,
            "source": source,
            "damping": damping,
            "run_id": run_id,
        }
        with tempfile.TemporaryDirectory() as scratch:
            candidate.forecaster.save(Path(scratch) / MODEL_FILE)
            (Path(scratch) / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
            client.log_artifacts(run_id, scratch, MODEL_DIR)
        version = champion.version if champion else None
        if decision.register:
            version = _register(client, name, run, config, by_name["lstm"])
            forget_champion(cache_dir)
        tags = {
            "ipa.registered": str(decision.register).lower(),
            "ipa.registration_reason": reason,
            **({"ipa.registered_version": version} if decision.register else {}),
        }
        client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    if decision.register:
        log(f"registered {name} version {version} as {CHAMPION}: {reason}")
    else:
        log(f"not registered, {name}@{CHAMPION} stays version {version}: {reason}")
    log(f"MLflow run {run_id} in experiment {experiment}")
    return TrainingOutcome(run_id, decision.register, reason, version, evaluations)


def _register(client: MlflowClient, name: str, run, config: TrainingConfig, scored: Evaluation) -> str:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(
            name,
            tags={"ipa.kind": "load-forecaster"},
            description="Peak request rate over the coming horizon from the last 120 s (IPA's LSTM).",
        )
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    s = scored.score
    version = client.create_model_version(
        name,
        source=f"{run.info.artifact_uri}/{MODEL_DIR}",
        run_id=run.info.run_id,
        tags={
            "ipa.horizon_s": str(config.horizon_s),
            "ipa.mape": f"{s.mape:.6f}",
            "ipa.under_rate": f"{s.under_rate:.6f}",
            "ipa.mean_under": f"{s.mean_under:.6f}",
            "ipa.eval_days": f"{config.eval_days[0]},{config.eval_days[1]}",
            "ipa.train_days": f"{config.train_days[0]},{config.train_days[1]}",
        },
        description=(
            f"horizon {config.horizon_s} s; held-out days {list(config.eval_days)}: MAPE {s.mape:.4f}, "
            f"under-prediction rate {s.under_rate:.4f}, mean shortfall {s.mean_under:.4f}"
        ),
    )
    client.set_registered_model_alias(name, CHAMPION, version.version)
    return str(version.version)


def register_from_params(
    settings: Settings, params: Mapping[str, Any], trained: Mapping[str, Any], log: Log
) -> dict:
    """The training DAG's ``evaluate_and_register`` task; ``trained`` is ``train_from_params``' result."""
    from ipa_tasks.forecasting.lstm import LstmForecaster

    config = TrainingConfig.from_params(params)
    series = load_trace(params["trace"], int(params["damping"]))
    candidate = TrainedCandidate(
        forecaster=LstmForecaster.load(Path(trained["candidate"])),
        train_seconds=float(trained["train_seconds"]),
        train_windows=int(trained["train_windows"]),
        losses=tuple(float(loss) for loss in trained["losses"]),
    )
    outcome = evaluate_and_register(
        settings.tracking_uri,
        series,
        config,
        candidate,
        source=str(params["trace"]),
        damping=int(params["damping"]),
        cache_dir=default_cache_dir(settings),
        log=log,
    )
    # The candidate is in the run's artifacts now (and registered if it won); its local copy is spent.
    shutil.rmtree(Path(trained["candidate"]).parent, ignore_errors=True)
    return outcome.to_dict()
