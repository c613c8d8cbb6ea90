"""The one-command demo, shortened: real MLflow server, real Airflow api-server, scheduler and dag-processor
(LocalExecutor, SQLite), the real serving runtime and stage-server processes, the real load generator on a
window of the Twitter trace; only the pipeline is small (``smoke.yaml``: the scikit-learn digits classifiers,
no build) and planned from the fixed profile beside it (no profiling round), so that the load's rise must
switch ``knn`` to ``logistic``. It asserts that ``ipa_adapt``, run by the scheduler, applied that change,
recorded it in the decisions table and in MLflow, and that the demo leaves no process behind.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from ipa_tasks.demo.run import Demo, DemoOptions
from ipa_tasks.demo.services import is_running, read_services
from ipa_tasks.serving.locations import runtime_file
from ipa_tasks.serving.stage_server import free_port
from ipa_tasks.settings import Settings

SPEC = Path(__file__).with_name("smoke.yaml")
# A quiet minute (about 20 requests/s at this scale: one knn replica), then 75-85 requests/s, which one
# knn replica (40/s) cannot serve and one logistic replica (400/s) can.
START, SECONDS, SCALE = 1_863_030, 150, 3.0


@pytest.mark.slow
def test_the_demo_adapts_a_served_pipeline_and_records_the_change(tmp_path: Path, monkeypatch):
    home = tmp_path / "ipa"
    monkeypatch.setenv("IPA_HOME", str(home))
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.setenv("AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT", str(free_port()))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    settings = Settings(home=home, tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    options = DemoOptions(
        pipeline=str(SPEC),
        start=START,
        seconds=SECONDS,
        scale=SCALE,
        interval_s=15,
        profile=False,
        airflow_port=free_port(),
        mlflow_port=free_port(),
        runtime_port=free_port(),
        router_port_base=free_port(),
    )
    output = io.StringIO()
    demo = Demo(options, Console(file=output, width=200), settings)
    try:
        result = demo.run()
    finally:
        print(output.getvalue())

    # The scheduler's runs decided, applied and recorded the switch.
    decisions = pd.read_csv(result.folder / "decisions.csv")
    changed = decisions[decisions["changed"] == 1]
    assert len(changed) >= 1, decisions[["time", "forecast_rps", "configuration", "apply_status"]]
    assert "classify=logistic" in changed.iloc[0]["configuration"]
    assert changed.iloc[0]["run_id"].startswith("scheduled__")
    assert (decisions["apply_status"] != "rolled_back").all()
    assert result.summary["plan_changes"] >= 1

    # Every request was answered: served, or dropped by the router while one knn replica was overloaded;
    # none was lost to the switch.
    requests = pd.read_csv(result.folder / "requests.csv")
    assert len(requests) == result.summary["requests"] > 2000
    assert result.summary["errors"] == 0
    served_by = {json.loads(v).get("classify") for v in requests.loc[requests["outcome"] == "ok", "variants"]}
    assert served_by == {"knn", "logistic"}

    # The report and its plots, and the same decision in MLflow (the server's store, read directly now).
    for name in ("report.md", "intervals.csv", "load_forecast.png", "accuracy_cost.png", "latency_cdf.png"):
        assert (result.folder / name).stat().st_size > 0
    from mlflow import MlflowClient

    client = MlflowClient(settings.tracking_uri)
    day_run = client.search_runs(
        [client.get_experiment_by_name("ipa-adaptation").experiment_id], "tags.`ipa.pipeline` = 'demo-smoke'"
    )[0]
    assert max(m.value for m in client.get_metric_history(day_run.info.run_id, "changed")) == 1
    demo_run = client.get_run(result.mlflow_run_id)
    assert demo_run.data.metrics["plan_changes"] >= 1

    # The simulator replays the same window and profile: the fidelity check runs on the demo's folder.
    from ipa_tasks.simulation.fidelity import replay_demo_run

    fidelity = replay_demo_run(result.folder)[0].set_index("measure")
    assert fidelity.loc["requests", "live"] == fidelity.loc["requests", "simulated"] == len(requests)
    assert fidelity.loc["plan_changes", "simulated"] >= 1  # the simulated loop switches too

    # Nothing is left running.
    assert not result.kept_up
    assert not any(is_running(s) for s in demo.services)
    assert read_services(home) == []
    assert not runtime_file(home).exists()
