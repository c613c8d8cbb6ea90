"""
### Adapt the pipelines to their load, every 30 seconds

Each run is one tick per pipeline (a mapped task group, one per pipeline; a pipeline that fails does not
stop the others). The pipelines are the trigger's `pipelines`, else the Variable `ipa_adapt_pipelines` (a
JSON list: the scheduled runs take no conf), else both demo pipelines:

1. **observe** the per-second request rate of the last `history_s` seconds from the `load_source` param,
   else the Variable `ipa_load_source` (the same JSON), else Prometheus when `IPA_PROMETHEUS_URL` is set,
   else the local serving runtime's counts; a gap is filled, an unreachable source falls back to the last
   known load plus `fallback_margin`, and no known load keeps what runs;
2. **forecast** its peak over the next `horizon_s` seconds (the interval plus the time a change takes to
   land) with the registered LSTM or a baseline, plus `forecast_margin` (10 %: the LSTM forecasts the
   expected peak and would fall short of the actual one in 43 % of the held-out windows);
3. **plan**: solve the integer program for that load with the published profile and diff the plan against
   what runs now;
4. **apply** only what changed, in a safe order (scale out, then switch variants, then batch sizes, then
   scale in), on Kubernetes through the `ipa_kubernetes` connection (or the local target without it); a
   failure part-way is rolled back; then read back and wait for readiness. `dry_run` (or the Variable
   `ipa_adapt_dry_run` = `true`) plans and records without applying;
5. **record** the decision: a row in the day's table under `IPA_HOME/adaptation/<pipeline>/decisions/`, and
   in MLflow (experiment `ipa-adaptation`, one run per pipeline and day, metrics stepped by the second of
   the day, `decisions.csv` and a plot). A tick that could not be applied fails here, after it is recorded.

The interval is the environment variable `IPA_ADAPT_INTERVAL_S` of the scheduler and dag-processor
(default 30); one run at a time, no catch-up.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import Asset, Param, Variable, dag, get_current_context, task, task_group

from ipa_tasks.adaptation.choices import FORECASTERS, LOOP_POLICIES, TARGETS
from ipa_tasks.assets import PROFILES_ASSET_NAME, PROFILES_ASSET_URI
from ipa_tasks.optimizer.choices import SOLVERS

DAG_ID = Path(__file__).stem
INTERVAL_S = int(os.environ.get("IPA_ADAPT_INTERVAL_S", "30"))
PROFILES = Asset(name=PROFILES_ASSET_NAME, uri=PROFILES_ASSET_URI)


def _options():
    from ipa_tasks.adaptation.steps import TickOptions

    return TickOptions.from_params(
        get_current_context()["params"],
        dry_run_variable=Variable.get("ipa_adapt_dry_run", ""),
        load_source_variable=Variable.get("ipa_load_source", ""),
    )


def _label(tick: dict) -> None:
    get_current_context()["tick_label"] = tick["pipeline"]


def _target(options):
    from ipa_tasks.adaptation.steps import make_target
    from ipa_tasks.kubernetes_connection import kubernetes_connection_exists
    from ipa_tasks.settings import current_settings

    return make_target(options.target, current_settings(), kubernetes_connection_exists)


@dag(
    dag_id=DAG_ID,
    schedule=timedelta(seconds=INTERVAL_S),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["ipa", "adaptation"],
    params={
        "pipelines": Param(
            ["digit-strips", "language-routing"],
            type="array",
            items={"type": "string", "minLength": 1},
            minItems=1,
            uniqueItems=True,
            description="spec names or spec files (scheduled runs: the Variable ipa_adapt_pipelines if set)",
        ),
        "policy": Param(
            "ipa",
            enum=list(LOOP_POLICIES),
            description="ipa, a baseline of the paper, or agent (the agentic planner, checked by the MILP)",
        ),
        "solver": Param("auto", enum=list(SOLVERS), description="auto: Gurobi, HiGHS if Gurobi refuses"),
        "forecaster": Param("lstm", enum=list(FORECASTERS), description="lstm: the registered champion"),
        "history_s": Param(
            120, type="integer", minimum=10, maximum=3600, description="seconds observed (the LSTM needs 120)"
        ),
        "horizon_s": Param(40, type="integer", minimum=1, maximum=3600, description="seconds forecast"),
        "forecast_margin": Param(0.1, type="number", minimum=0, description="added to every forecast"),
        "fallback_margin": Param(0.2, type="number", minimum=0, description="added to the last known load"),
        "load_source": Param(
            {}, type="object", description='{} (auto), {"kind": "prometheus", "url": ...}, {"kind": "local"}'
        ),
        "target": Param("auto", enum=list(TARGETS), description="where plans are applied"),
        "dry_run": Param(False, type="boolean", description="plan and record, apply nothing"),
        "ready_timeout_s": Param(15, type="number", minimum=0, description="wait for readiness"),
    },
)
def ipa_adapt() -> None:
    @task
    def select_pipelines() -> list[dict]:
        """Validate the pipelines' specs; one tick each."""
        from ipa_tasks.adaptation.steps import PIPELINES_VARIABLE, pipelines_chosen, pipelines_to_adapt

        context = get_current_context()
        conf = context["dag_run"].conf or {}
        variable = Variable.get(PIPELINES_VARIABLE, "")
        return pipelines_to_adapt(pipelines_chosen(conf, variable, list(context["params"]["pipelines"])))

    @task(map_index_template="{{ tick_label }}")
    def observe(tick: dict) -> dict:
        """The recent per-second request rate, gaps filled, or the fallback."""
        from ipa_tasks.adaptation.steps import observe_load
        from ipa_tasks.settings import current_settings

        _label(tick)
        return observe_load(current_settings(), tick, _options(), print)

    @task(map_index_template="{{ tick_label }}")
    def forecast(tick: dict) -> dict:
        """The peak load over the horizon."""
        from ipa_tasks.adaptation.steps import forecast_load
        from ipa_tasks.settings import current_settings

        _label(tick)
        return forecast_load(current_settings(), tick, _options(), print)

    @task(map_index_template="{{ tick_label }}", inlets=[PROFILES])
    def plan(tick: dict) -> dict:
        """Solve for the forecast load; diff against what runs."""
        from ipa_tasks.adaptation.steps import decide
        from ipa_tasks.settings import current_settings

        _label(tick)
        options = _options()
        return decide(current_settings(), tick, options, _target(options), print)

    @task(map_index_template="{{ tick_label }}")
    def apply(tick: dict) -> dict:
        """Apply what changed in a safe order, roll back on failure, read back, wait for readiness."""
        from ipa_tasks.adaptation.steps import apply_plan
        from ipa_tasks.settings import current_settings

        _label(tick)
        options = _options()
        return apply_plan(current_settings(), tick, options, _target(options), print)

    @task(map_index_template="{{ tick_label }}")
    def record(tick: dict) -> dict:
        """The decision in the day's table and in MLflow; fails the tick if it could not be applied."""
        from ipa_tasks.adaptation.decisions import record_tick
        from ipa_tasks.settings import current_settings

        _label(tick)
        settings = current_settings()
        row = record_tick(settings.home, settings.tracking_uri, tick, get_current_context()["run_id"], print)
        if "error" in tick:
            raise RuntimeError(f"{tick['pipeline']}: {tick['error']}")
        return row

    # A mapped group: each pipeline's chain runs on its own, so one pipeline's failure stops only its tick.
    @task_group
    def tick(pipeline: dict) -> None:
        record(apply(plan(forecast(observe(pipeline)))))

    tick.expand(pipeline=select_pipelines())


ipa_adapt()
