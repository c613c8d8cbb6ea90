"""
### Run one of the paper's experiments on the replay simulator, and log it to compare in MLflow

Manual trigger only. Pick the `experiment` in the trigger form:
- `e2e`: the four load windows x the policies ipa, fa2-low, fa2-high and rim;
- `preferences`: accuracy-prioritised, balanced and resource-prioritised objective weights;
- `predictors`: the LSTM, reactive (last value), window max and an oracle;
- `intervals`: adaptation every 10, 30, 60 and 120 s, reactive vs oracle.

1. **replay** runs the experiment's grid, one mapped task per pipeline. The default is IPA's five
   pipelines on their synthetic profiles and the two demo pipelines on their measured ones.
2. **report** writes `results.csv`, `results.md` and one plot per metric under
   `$IPA_HOME/experiments/<experiment>/<run>/`. It also logs to MLflow: experiment
   `ipa-replay-experiments` gets a parent run with those files and one child run per replay (its params
   and metrics), so that replays can be compared side by side in the MLflow UI.

Each replay takes well under a second (`ipa experiment` does the same from the shell; see
`ipa_tasks.simulation`).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from airflow.sdk import Param, dag, get_current_context, task

from ipa_tasks.simulation.names import DEMO_PIPELINES, EXPERIMENTS, IPA_PIPELINES

DAG_ID = Path(__file__).stem


@dag(
    dag_id=DAG_ID,
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    doc_md=__doc__,
    tags=["ipa", "simulation"],
    params={
        "experiment": Param("e2e", enum=list(EXPERIMENTS), description="which of the paper's experiments"),
        "pipelines": Param(
            [*IPA_PIPELINES, *DEMO_PIPELINES],
            type="array",
            items={"type": "string", "minLength": 1},
            minItems=1,
            uniqueItems=True,
            description="spec names",
        ),
        "seed": Param(0, type="integer", minimum=0, description="seed of the arrivals and service times"),
    },
)
def ipa_replay_experiments() -> None:
    @task
    def select_pipelines() -> list[str]:
        """The pipelines to replay, each spec validated."""
        from ipa_tasks.spec import load_spec, resolve_spec_path

        pipelines = list(get_current_context()["params"]["pipelines"])
        for name in pipelines:
            load_spec(resolve_spec_path(name))
        return pipelines

    @task(map_index_template="{{ pipeline_label }}")
    def replay(pipeline: str) -> list[dict]:
        """Every replay of the experiment's grid for one pipeline."""
        from ipa_tasks.optimizer.plan import json_safe
        from ipa_tasks.settings import current_settings
        from ipa_tasks.simulation.experiments import run_experiment
        from ipa_tasks.simulation.replay import loop_forecasters

        context = get_current_context()
        context["pipeline_label"] = pipeline
        experiment, seed = context["params"]["experiment"], int(context["params"]["seed"])
        notes: set[str] = set()
        table = run_experiment(experiment, [pipeline], loop_forecasters(current_settings(), notes), seed=seed)
        for note in sorted(notes):
            print(note)
        print(f"{pipeline}: {len(table)} replays of {experiment}")
        return json_safe(table.to_dict("records"))

    @task
    def report(rows: list[list[dict]]) -> dict:
        """The results as files and as an MLflow parent run with a child per replay."""
        import pandas as pd

        from ipa_tasks.settings import current_settings
        from ipa_tasks.simulation.experiments import log_experiment, markdown, write_results

        settings = current_settings()
        context = get_current_context()
        experiment = context["params"]["experiment"]
        table = pd.DataFrame([row for part in rows for row in part])
        safe_run = context["run_id"].replace(":", "-").replace("+", "-")
        folder = settings.home / "experiments" / experiment / safe_run
        written = write_results(experiment, table, folder)
        print(markdown(experiment, table))
        run_id = log_experiment(settings.tracking_uri, experiment, table, folder)
        print(f"written: {', '.join(map(str, written))}; MLflow run {run_id}")
        return {"folder": str(folder), "mlflow_run_id": run_id, "replays": len(table)}

    report(replay.expand(pipeline=select_pipelines()))


ipa_replay_experiments()
