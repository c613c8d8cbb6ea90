"""``ipa_train_forecaster``: its params and schedule, and a real ``dag.test()`` run on a short generated
trace, in the session's temporary ``IPA_HOME`` and MLflow store."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from ipa_tasks.forecasting.registry import CHAMPION, EXPERIMENT, FORECASTER_MODEL
from ipa_tasks.forecasting.trace_location import default_trace_path
from ipa_tasks.settings import current_settings
from tests.forecasting.test_training import synthetic_trace

DAG_FILE = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]) / "ipa_train_forecaster.py"
SHORT = {"train_days": [0, 1], "eval_days": [1, 2], "epochs": 1, "horizon_s": 40}


@pytest.fixture(scope="module")
def dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(DAG_FILE))
    assert bag.import_errors == {}
    return bag.dags["ipa_train_forecaster"]


def test_weekly_one_run_at_a_time_with_validated_params(dag):
    from airflow.sdk.exceptions import ParamValidationError

    assert dag.timetable.expression == "0 0 * * 0"  # @weekly
    assert dag.max_active_runs == 1 and dag.catchup is False
    assert dag.get_task("evaluate_and_register").upstream_task_ids == {"train"}
    params = dag.params
    assert params["trace"] == str(default_trace_path()), "the DAG's default trace follows the library's rule"
    assert (params["damping"], params["train_days"], params["eval_days"]) == (8, [0, 14], [14, 21])
    assert (params["horizon_s"], params["epochs"], params["seed"]) == (40, 30, 7)
    for name, bad in (("epochs", 0), ("train_days", [0]), ("eval_days", [14, -1]), ("horizon_s", 0)):
        with pytest.raises(ParamValidationError):
            params.get_param(name).resolve(bad)
    assert all(params.get_param(name).description for name in params)


@pytest.mark.slow
def test_a_training_run_logs_scores_and_registers_the_first_champion(airflow_db, dag, tmp_path: Path):
    from mlflow import MlflowClient

    trace = tmp_path / "trace.csv"
    load = synthetic_trace(2) * 8  # the DAG damps by 8
    pd.DataFrame({"second": range(len(load)), "requests": load.astype(int)}).to_csv(trace, index=False)
    run = dag.test(run_conf={"trace": str(trace), **SHORT})
    assert run.state == "success"

    client = MlflowClient(tracking_uri=current_settings().tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], f"params.source = '{trace}'")
    (mlflow_run,) = runs
    data = mlflow_run.data
    assert mlflow_run.info.status == "FINISHED"
    assert data.params["train_days"] == "0,1" and data.params["epochs"] == "1"
    for key in ("lstm", "last_value", "window_max", "ewma", "holt"):
        assert 0 <= data.metrics[f"mape_{key}"] < 1 and 0 <= data.metrics[f"under_rate_{key}"] <= 1, key
    assert data.metrics["train_seconds"] > 0
    assert [m.step for m in client.get_metric_history(mlflow_run.info.run_id, "train_loss")] == [1]
    files = {f.path for f in client.list_artifacts(mlflow_run.info.run_id)}
    assert {"comparison.csv", "forecast_vs_actual.png", "model"} <= files
    comparison = pd.read_csv(
        client.download_artifacts(mlflow_run.info.run_id, "comparison.csv", str(tmp_path))
    )
    assert list(comparison["forecaster"]) == ["lstm", "last-value", "window-max", "ewma", "holt"]
    assert comparison.loc[0, "mape"] == pytest.approx(data.metrics["mape_lstm"])

    # The session's store had no forecaster: the first training becomes the champion.
    assert data.tags["ipa.registered"] == "true", data.tags["ipa.registration_reason"]
    champion = client.get_model_version_by_alias(FORECASTER_MODEL, CHAMPION)
    assert champion.run_id == mlflow_run.info.run_id
    assert champion.tags["ipa.horizon_s"] == "40"
    # The train task handed its candidate to the next one as a file, which is removed once logged.
    saved = Path(current_settings().home) / "forecasters" / "candidates"
    assert saved.is_dir() and not any(saved.rglob("lstm.pt"))


@pytest.mark.slow
def test_a_missing_trace_fails_the_training(airflow_db, dag, tmp_path: Path):
    run = dag.test(run_conf={"trace": str(tmp_path / "missing.csv"), **SHORT})
    assert run.state == "failed"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states == {"train": "failed", "evaluate_and_register": "upstream_failed"}
