"""
### Train the load forecaster, compare it with the baselines, register it if it is better

The adaptation loop sizes the pipeline for the **peak load of the next `horizon_s` seconds** (the 30-s
adaptation interval plus the ~10 s a change takes to land). This DAG trains IPA's peak LSTM for that horizon
and decides whether the adaptation loop should use it:

1. **train**: the LSTM (12 bucket maxima of 10 s in, the peak of the next `horizon_s` out) on the training
   days of the per-second trace, with zero seconds removed as IPA did; seeded and single-threaded, so the
   same params give the same model. The model is saved under `$IPA_HOME/forecasters/candidates/<run>/`.
2. **evaluate_and_register**: scores the candidate, the baselines (last value, window max, EWMA, Holt) and
   the currently registered model, re-scored, on the same held-out windows (MAPE, under-prediction rate,
   mean shortfall). The candidate becomes version *n* of `ipa-load-forecaster` with alias `champion` only if
   its MAPE is lower and its under-prediction rate at most 0.02 above the champion's.

MLflow: experiment `ipa-forecasting`, one run per training (params, scores per forecaster, `comparison.csv`,
a forecast-vs-actual plot of 2 h of a held-out day, the model files); the run's tags `ipa.registered` and
`ipa.registration_reason` say whether it replaced the champion and why. Runs weekly and on trigger.
Params: `trace` is a CSV with columns `second,requests` (default: `$IPA_TWITTER_TRACE`, else the shared
Twitter trace); days are `[first, last)`, 0-based.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from airflow.sdk import Param, dag, get_current_context, task

from ipa_tasks.forecasting.trace_location import default_trace_path

DAG_ID = Path(__file__).stem
DEFAULT_TRACE = str(default_trace_path())
_day_span = {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 2, "maxItems": 2}


@dag(
    dag_id=DAG_ID,
    schedule="@weekly",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["ipa", "forecasting"],
    params={
        "trace": Param(
            DEFAULT_TRACE,
            type="string",
            minLength=1,
            description="per-second CSV with columns second,requests",
        ),
        "damping": Param(8, type="integer", minimum=1, description="divide every value by this (IPA: 8)"),
        "train_days": Param([0, 14], **_day_span, description="training days [first, last), 0-based"),
        "eval_days": Param([14, 21], **_day_span, description="held-out days [first, last), 0-based"),
        "horizon_s": Param(
            40,
            type="integer",
            minimum=1,
            maximum=3600,
            description="forecast the peak of the next N s: adaptation interval + time for a change to land",
        ),
        "epochs": Param(30, type="integer", minimum=1, maximum=1000, description="LSTM training epochs"),
        "seed": Param(7, type="integer", minimum=0, description="random seed of the LSTM training"),
    },
)
def ipa_train_forecaster() -> None:
    @task
    def train() -> dict:
        """Train the LSTM on the training days and save it for the next task."""
        from ipa_tasks.forecasting.training import train_from_params
        from ipa_tasks.settings import current_settings

        context = get_current_context()
        return train_from_params(current_settings().home, context["params"], context["run_id"], print)

    @task
    def evaluate_and_register(trained: dict) -> dict:
        """Score every forecaster on the held-out days, log the MLflow run, register the LSTM if better."""
        from ipa_tasks.forecasting.registry import register_from_params
        from ipa_tasks.settings import current_settings

        return register_from_params(current_settings(), get_current_context()["params"], trained, print)

    evaluate_and_register(train())


ipa_train_forecaster()
