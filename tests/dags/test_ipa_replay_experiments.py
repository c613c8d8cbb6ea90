"""``ipa_replay_experiments``: a manual DAG with validated params, and a real ``dag.test()`` run that
replays an experiment per pipeline and logs a parent MLflow run with a child per replay."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from ipa_tasks.settings import current_settings
from ipa_tasks.simulation.experiments import MLFLOW_EXPERIMENT

DAG_FILE = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]) / "ipa_replay_experiments.py"


@pytest.fixture(scope="module")
def dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(DAG_FILE))
    assert bag.import_errors == {}
    return bag.dags["ipa_replay_experiments"]


def test_manual_only_with_validated_params(dag):
    from airflow.sdk.exceptions import ParamValidationError

    assert dag.timetable.can_be_scheduled is False and dag.catchup is False  # manual trigger only
    assert dag.params["experiment"] == "e2e" and len(dag.params["pipelines"]) == 7
    with pytest.raises(ParamValidationError):
        dag.params.get_param("experiment").resolve("fig9")
    with pytest.raises(ParamValidationError):
        dag.params.get_param("pipelines").resolve([])


@pytest.mark.slow
def test_a_run_replays_each_pipeline_and_logs_the_experiment(airflow_db, dag):
    from mlflow import MlflowClient

    run = dag.test(run_conf={"experiment": "preferences", "pipelines": ["video", "digit-strips"]})
    assert run.state == "success"
    replays = [ti for ti in run.get_task_instances() if ti.task_id == "replay"]
    assert len(replays) == 2 and all(ti.state == "success" for ti in replays)

    client = MlflowClient(tracking_uri=current_settings().tracking_uri)
    experiment = client.get_experiment_by_name(MLFLOW_EXPERIMENT)
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`ipa.kind` = 'replay-experiment'")
    children = client.search_runs(
        [experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    assert sorted(c.data.params["pipeline"] for c in children) == ["digit-strips"] * 3 + ["video"] * 3
    folder = next((current_settings().home / "experiments" / "preferences").iterdir())
    table = pd.read_csv(folder / "results.csv")
    assert len(table) == 6 and set(table["profile"]) == {"synthetic", "measured"}
