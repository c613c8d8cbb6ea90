"""The record of every adaptation decision: a table per pipeline and UTC day, kept under
``<IPA_HOME>/adaptation/<pipeline>/decisions/<day>.csv`` and mirrored to MLflow.

MLflow gets one run per pipeline and day (experiment ``ipa-adaptation``, run ``adapt <pipeline> <day>``),
not one per tick: every tick adds its numbers as metrics stepped by the second of the day (so the run's
charts plot load, forecast, cores and accuracy over the day) and replaces the ``decisions.csv`` table and
the ``load_forecast_cost.png`` plot with the day's so far, when they have something new to show: on the
day's first tick, a tick that changed something or failed, and every ``ARTIFACT_EVERY`` ticks (the table
grows through the day, and re-uploading it every 30 s would cost more with every tick).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ipa_tasks.adaptation.state import adaptation_dir
from ipa_tasks.atomic_files import atomic_write
from ipa_tasks.optimizer.plan import json_safe

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

Log = Callable[[str], object]
EXPERIMENT = "ipa-adaptation"
DAY_KIND = "adaptation-day"
TABLE_ARTIFACT = "decisions.csv"
PLOT_ARTIFACT = "load_forecast_cost.png"
ARTIFACT_EVERY = 10
TEXT_COLUMNS = (
    "time",
    "run_id",
    "observation_source",
    "forecaster",
    "policy",
    "solver",
    "plan_status",
    "reason",
    "configuration",
    "running",
    "apply_status",
    "target",
    "message",
)
METRICS = (
    "observed_rps",
    "observed_peak_rps",
    "forecast_rps",
    "objective",
    "accuracy",
    "total_cores",
    "latency_s",
    "decision_time_s",
    "apply_time_s",
    "tick_time_s",
    "steps",
    "steps_applied",
    "changed",
    "degraded",
    "observation_fallback",
    "dry_run",
)


def decision_row(tick: Mapping[str, Any], run_id: str, at: datetime) -> dict[str, Any]:
    """The tick in one flat row: what was observed and forecast, the plan and its terms, what was done."""
    observation = tick.get("observation") or {}
    rates = observation.get("rates") or []
    last = observation.get("last_rps", rates[-1] if rates else math.nan)
    peak = observation.get("peak_rps", max(rates) if rates else math.nan)
    forecast = tick.get("forecast") or {}
    plan = tick.get("plan") or {}
    terms = plan.get("terms") or {}
    applied = tick.get("apply") or {}
    timings = [tick.get(k) for k in ("observe_s", "forecast_s", "decide_s")]
    return {
        "time": at.astimezone(UTC).isoformat(timespec="seconds"),
        "run_id": run_id,
        "observed_rps": float(last),
        "observed_peak_rps": float(peak),
        "observation_source": observation.get("source", ""),
        "observation_fallback": int(bool(observation.get("fallback"))),
        "missing_s": observation.get("missing", 0),
        "forecaster": forecast.get("forecaster", ""),
        "forecast_rps": forecast.get("rps", math.nan),
        "horizon_s": forecast.get("horizon_s", math.nan),
        "policy": plan.get("policy", ""),
        "solver": plan.get("solver", ""),
        "plan_status": plan.get("status", ""),
        "degraded": int(bool(plan.get("degraded"))),
        "reason": plan.get("reason", ""),
        "objective": _number(terms.get("objective")),
        "accuracy": _number(terms.get("accuracy")),
        "accuracy_term": _number(terms.get("accuracy_term")),
        "cost_term": _number(terms.get("cost_term")),
        "batch_term": _number(terms.get("batch_term")),
        "change_term": _number(terms.get("change_term")),
        "total_cores": _number(plan.get("total_cores")),
        "latency_s": _number(plan.get("latency_s")),
        "sla_s": _number(plan.get("sla_s")),
        "configuration": _configuration(plan),
        "running": _running(tick.get("running")),
        "decision_time_s": _number(plan.get("build_time_s", 0.0)) + _number(plan.get("solve_time_s", 0.0)),
        "tick_time_s": sum(t for t in timings if t is not None),
        "steps": len(tick.get("steps") or []),
        "steps_applied": len(applied.get("done") or []),
        "apply_status": applied.get("status", "not run"),
        "changed": int(applied.get("status") == "applied"),
        "apply_time_s": float(applied.get("duration_s", 0.0)),
        "dry_run": int(bool(tick.get("dry_run"))),
        "target": tick.get("target", ""),
        "message": tick.get("error") or applied.get("message", ""),
    }


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def _configuration(plan: Mapping[str, Any]) -> str:
    return "; ".join(
        f"{s['stage']}={s['variant']}/b{s['batch_size']}/c{s['cores']}/x{s['replicas']}"
        for s in plan.get("stages") or []
    )


def _running(running: Mapping[str, Mapping[str, Any]] | None) -> str:
    """What ran when the tick decided, in the plan's notation."""
    return "; ".join(
        f"{stage}={c['variant']}/b{c['batch_size']}/c{c['cores']}/x{c['replicas']}"
        for stage, c in (running or {}).items()
    )


def read_decisions(path: Path) -> pd.DataFrame:
    """A day's table as written, text columns as text ("" where empty, not NaN; tables written before a
    column existed get it empty)."""
    import pandas as pd

    table = pd.read_csv(path, dtype={c: str for c in TEXT_COLUMNS}, keep_default_na=False, na_values=[""])
    for column in TEXT_COLUMNS:
        table[column] = table[column].fillna("") if column in table else ""
    return table


def day_table_path(home: Path, pipeline: str, day: str) -> Path:
    return adaptation_dir(home, pipeline) / "decisions" / f"{day}.csv"


def append_decision(home: Path, pipeline: str, row: Mapping[str, Any]) -> pd.DataFrame:
    """Add the row to its day's table (atomically) and return the whole day so far."""
    import pandas as pd

    path = day_table_path(home, pipeline, row["time"][:10])
    table = pd.DataFrame([row])
    if path.exists():
        table = pd.concat([read_decisions(path), table], ignore_index=True)
    atomic_write(path, lambda tmp: table.to_csv(tmp, index=False))
    return table


def decisions_plot(table: pd.DataFrame, title: str) -> Figure:
    """Observed peak load and the forecast, and the plan's cores and accuracy, over time."""
    import pandas as pd
    from matplotlib.figure import Figure

    times = pd.to_datetime(table["time"])
    figure = Figure(figsize=(10, 6), layout="constrained")
    load_ax, cost_ax = figure.subplots(2, 1, sharex=True)
    load_ax.plot(times, table["observed_peak_rps"], "o-", label="observed peak (last window)")
    # Drawn at the tick that made it: it covers the horizon after that tick.
    load_ax.plot(times, table["forecast_rps"], "s--", label="forecast peak of the coming horizon")
    load_ax.set_ylabel("requests/s")
    load_ax.legend(fontsize="small")
    load_ax.grid(True, alpha=0.3)
    cost_ax.step(times, table["total_cores"], where="post", color="C2", label="cores")
    cost_ax.set_ylabel("cores of the plan")
    accuracy_ax = cost_ax.twinx()
    accuracy_ax.step(times, table["accuracy"], where="post", color="C3", label="pipeline accuracy")
    accuracy_ax.set_ylabel("pipeline accuracy")
    changed = table["changed"] == 1
    cost_ax.scatter(times[changed], table.loc[changed, "total_cores"], color="k", zorder=3, label="applied")
    cost_ax.legend(loc="upper left", fontsize="small")
    accuracy_ax.legend(loc="upper right", fontsize="small")
    cost_ax.grid(True, alpha=0.3)
    figure.suptitle(title)
    return figure


def log_to_mlflow(tracking_uri: str, pipeline: str, row: Mapping[str, Any], day: pd.DataFrame) -> str:
    """Add the tick to the pipeline's run of the day (created on the day's first tick); its run id."""
    from mlflow.entities import Metric

    from ipa_tasks.tracking import experiment_id_for, mlflow_client

    client = mlflow_client(tracking_uri)
    experiment_id = experiment_id_for(client, EXPERIMENT, tracking_uri)
    date = row["time"][:10]
    run_id = _day_run(client, experiment_id, pipeline, date)
    at = datetime.fromisoformat(row["time"])
    step = at.hour * 3600 + at.minute * 60 + at.second
    timestamp = int(at.timestamp() * 1000)
    metrics = [
        Metric(name, float(row[name]), timestamp, step)
        for name in METRICS
        if row.get(name) is not None and math.isfinite(float(row[name]))
    ]
    client.log_batch(run_id, metrics=metrics)
    eventful = row["changed"] or row["apply_status"] in ("rolled_back", "inconsistent", "not run")
    if len(day) == 1 or eventful or len(day) % ARTIFACT_EVERY == 0:
        client.log_text(run_id, day.to_csv(index=False), TABLE_ARTIFACT)
        figure = decisions_plot(day, f"{pipeline}: adaptation on {date} (UTC)")
        client.log_figure(run_id, figure, PLOT_ARTIFACT)
    client.set_terminated(run_id, "FINISHED")
    return run_id


def _day_run(client: Any, experiment_id: str, pipeline: str, date: str) -> str:
    from ipa_tasks.tracking import runs_filter

    # Dates are digits and dashes, so the filter needs no escaping.
    wanted = f"{runs_filter(DAY_KIND, pipeline)} and tags.`ipa.date` = '{date}'"
    found = client.search_runs([experiment_id], wanted, max_results=1)
    if found:
        return found[0].info.run_id
    run = client.create_run(
        experiment_id,
        run_name=f"adapt {pipeline} {date}",
        tags={"ipa.kind": DAY_KIND, "ipa.pipeline": pipeline, "ipa.date": date},
    )
    return run.info.run_id


def record_tick(
    home: Path, tracking_uri: str, tick: Mapping[str, Any], run_id: str, log: Log, at: datetime | None = None
) -> dict[str, Any]:
    """Keep the tick's row in the day's table and in MLflow; say in words what was decided and done."""
    row = decision_row(tick, run_id, at or datetime.now(UTC))
    day = append_decision(home, tick["pipeline"], row)
    mlflow_run = log_to_mlflow(tracking_uri, tick["pipeline"], row, day)
    log(summary_sentence(row))
    log(
        f"recorded as row {len(day)} of {day_table_path(home, tick['pipeline'], row['time'][:10])} "
        f"and in MLflow run {mlflow_run} (experiment {EXPERIMENT})"
    )
    return {**json_safe(row), "mlflow_run_id": mlflow_run}


def summary_sentence(row: Mapping[str, Any]) -> str:
    observed = "unknown" if math.isnan(row["observed_peak_rps"]) else f"{row['observed_peak_rps']:.2f}"
    forecast = "none" if math.isnan(row["forecast_rps"]) else f"{row['forecast_rps']:.2f}"
    forecaster = row["forecaster"] or "no forecaster"
    text = f"observed peak {observed} requests/s, forecast {forecast} ({forecaster})"
    if row["configuration"]:
        text += f"; plan {row['configuration']} ({row['plan_status']}, {row['solver']})"
    text += f"; {row['steps']} step(s) planned, {row['steps_applied']} applied, {row['apply_status']}"
    if row["message"]:
        text += f": {row['message']}"
    return text
