"""The paper's experiments on the replay simulator (``ipa experiment NAME``), one grid of replays each.

- ``e2e``: the end-to-end comparison, every load window x the policies ipa, fa2-low, fa2-high and rim.
- ``preferences``: the objective preference sweep on the bursty window: accuracy-prioritised (alpha 10,
  beta 0.125), balanced (the spec's own weights) and resource-prioritised (alpha 0.125, beta 1), IPA's
  values (``reference/ipa.md`` section 1.3).
- ``predictors``: the predictor ablation, every window x lstm, last-value (reactive), window-max and oracle.
- ``intervals``: the adaptation interval sweep on the bursty window, 10/30/60/120 s, for window-max and
  the oracle (how much of the interval's cost forecasting ahead can recover).

Each runs on IPA's five pipelines (their synthetic profiles) and the two demo pipelines (their measured
profiles), the ``profile`` column says which. The demo pipelines get 10x the window (damped by 8): IPA's
windows are 3-30 requests/s and the demo models serve hundreds. Results: one row per replay with its
summary; :func:`write_results` writes ``results.csv``, ``results.md`` and one PNG per metric;
:func:`log_experiment` logs an MLflow parent run with one child per replay (experiment
``ipa-replay-experiments``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ipa_tasks.atomic_files import atomic_write, atomic_write_text
from ipa_tasks.simulation.names import DEMO_PIPELINES, EXPERIMENTS, IPA_PIPELINES

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ipa_tasks.optimizer.planner import Planner

POLICIES = ("ipa", "fa2-low", "fa2-high", "rim")
PREFERENCES: dict[str, tuple[float, float] | None] = {
    "accuracy-prioritised": (10.0, 0.125),
    "balanced": None,
    "resource-prioritised": (0.125, 1.0),
}
PREDICTORS = ("lstm", "last-value", "window-max", "oracle")
INTERVALS = (10, 30, 60, 120)
DEMO_SCALE = 10.0
MLFLOW_EXPERIMENT = "ipa-replay-experiments"
METRICS = (
    "mean_accuracy",
    "mean_measured_accuracy",
    "core_seconds",
    "violation_share",
    "dropped_share",
    "p99_latency_s",
    "plan_changes",
    "requests",
)


@dataclass(frozen=True)
class Cell:
    """One replay of an experiment."""

    pipeline: str
    window: str
    policy: str = "ipa"
    forecaster: str = "window-max"
    interval_s: int = 30
    preference: str = "balanced"


def cells(name: str, pipelines: Sequence[str] | None = None) -> list[Cell]:
    from ipa_tasks.simulation.windows import PATTERNS

    chosen = list(pipelines or (*IPA_PIPELINES, *DEMO_PIPELINES))
    if name == "e2e":
        return [Cell(p, w, policy=x) for p in chosen for w in PATTERNS for x in POLICIES]
    if name == "preferences":
        return [Cell(p, "bursty", preference=x) for p in chosen for x in PREFERENCES]
    if name == "predictors":
        return [Cell(p, w, forecaster=f) for p in chosen for w in PATTERNS for f in PREDICTORS]
    if name == "intervals":
        return [
            Cell(p, "bursty", forecaster=f, interval_s=i)
            for p in chosen
            for i in INTERVALS
            for f in ("window-max", "oracle")
        ]
    raise ValueError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}")


def _weighted(planner: Planner, preference: str) -> Planner:
    from ipa_tasks.optimizer.planner import Planner

    weights = PREFERENCES[preference]
    if weights is None:
        return planner
    objective = planner.spec.objective.model_copy(
        update={"accuracy_weight": weights[0], "cost_weight": weights[1]}
    )
    return Planner(planner.spec.model_copy(update={"objective": objective}), planner.profile)


def run_experiment(
    name: str,
    pipelines: Sequence[str] | None = None,
    make_forecaster: Callable[[str, int], Any] | None = None,
    progress: Callable[[Cell], None] = lambda _: None,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per cell: the cell, where its profile came from, what forecaster ran, and its summary."""
    from ipa_tasks.forecasting.registry import baseline_forecasters
    from ipa_tasks.optimizer.planner import Planner
    from ipa_tasks.simulation.replay import ReplayOptions, simulate, window_forecaster
    from ipa_tasks.simulation.windows import load_pattern
    from ipa_tasks.spec import resolve_spec_path

    make = make_forecaster or (lambda n, horizon: baseline_forecasters(horizon, 0.1)[n])
    planners: dict[str, Planner] = {}
    rows = []
    for cell in cells(name, pipelines):
        if cell.pipeline not in planners:
            planners[cell.pipeline] = Planner.from_files(resolve_spec_path(cell.pipeline), None)
        planner = _weighted(planners[cell.pipeline], cell.preference)
        scale = DEMO_SCALE if cell.pipeline in DEMO_PIPELINES else 1.0
        options = ReplayOptions(
            policy=cell.policy, interval_s=cell.interval_s, horizon_s=cell.interval_s + 10, seed=seed
        )
        made: list[str] = []
        forecast = window_forecaster(
            cell.forecaster,
            history_s=options.history_s,
            horizon_s=options.horizon_s,
            margin=0.1,
            make=lambda n, made=made, horizon=options.horizon_s: _recorded(make(n, horizon), made),
        )
        result = simulate(planner, planner.profile, load_pattern(cell.window) * scale, forecast, options)
        synthetic = (planner.profile["source"] == "synthetic").all()
        rows.append(
            {
                **asdict(cell),
                "profile": "synthetic" if synthetic else "measured",
                "load_scale": scale,
                "forecaster_used": made[0] if made else cell.forecaster,
                **{k: result.summary[k] for k in (*METRICS, "late", "dropped", "decisions")},
            }
        )
        progress(cell)
    return pd.DataFrame(rows)


def _recorded(forecaster: Any, names: list[str]) -> Any:
    names.append(forecaster.name)
    return forecaster


def _varied(name: str) -> tuple[str, str]:
    """(the column an experiment varies within a panel, the one it varies across panels)."""
    return {
        "e2e": ("policy", "window"),
        "preferences": ("preference", "window"),
        "predictors": ("forecaster", "window"),
        "intervals": ("forecaster", "interval_s"),
    }[name]


def markdown(name: str, table: pd.DataFrame) -> str:
    inner, outer = _varied(name)
    shown = [
        "pipeline",
        "profile",
        outer,
        inner,
        "mean_accuracy",
        "core_seconds",
        "violation_share",
        "dropped_share",
        "p99_latency_s",
        "plan_changes",
    ]
    lines = ["| " + " | ".join(c.replace("_", " ") for c in shown) + " |", "|" + "---|" * len(shown)]
    for row in table[shown].to_dict("records"):
        cells_ = [
            f"{v:.2%}"
            if k.endswith("_share")
            else f"{v:.4g}"
            if isinstance(v, float) and math.isfinite(v)
            else str(v)
            for k, v in row.items()
        ]
        lines.append("| " + " | ".join(cells_) + " |")
    return f"# Experiment {name}\n\n" + "\n".join(lines) + "\n"


def plot(name: str, table: pd.DataFrame, metric: str) -> Figure:
    """One panel per pipeline: ``metric`` for each value of the inner variable, grouped by the outer one."""
    from matplotlib.figure import Figure

    inner, outer = _varied(name)
    pipelines = list(dict.fromkeys(table["pipeline"]))
    figure = Figure(figsize=(4 * len(pipelines), 3.2), layout="constrained")
    axes = figure.subplots(1, len(pipelines), squeeze=False)[0]
    for ax, pipeline in zip(axes, pipelines, strict=True):
        pivot = table[table["pipeline"] == pipeline].pivot_table(
            index=outer, columns=inner, values=metric, sort=False
        )
        pivot.plot.bar(ax=ax, legend=ax is axes[0], rot=20)
        ax.set_title(pipeline)
        ax.set_xlabel(outer.replace("_", " "))
        ax.set_ylabel(metric.replace("_", " "))
        ax.grid(axis="y", alpha=0.3)
    figure.suptitle(f"{name}: {metric.replace('_', ' ')} (replay simulator)")
    return figure


def write_results(name: str, table: pd.DataFrame, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "results.csv", folder / "results.md"]
    atomic_write(written[0], lambda tmp: table.to_csv(tmp, index=False))
    atomic_write_text(written[1], markdown(name, table))
    for metric in ("mean_accuracy", "core_seconds", "violation_share"):
        path = folder / f"{metric}.png"
        figure = plot(name, table, metric)
        atomic_write(path, lambda tmp, figure=figure: figure.savefig(tmp, format="png", dpi=90))
        written.append(path)
    return written


def log_experiment(tracking_uri: str, name: str, table: pd.DataFrame, folder: Path) -> str:
    """A parent run with the results as artifacts, and one child run per replay (params and metrics)."""
    from mlflow.entities import Metric, Param

    from ipa_tasks.tracking import experiment_id_for, mlflow_client

    client = mlflow_client(tracking_uri)
    experiment = experiment_id_for(client, MLFLOW_EXPERIMENT, tracking_uri)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    parent = client.create_run(
        experiment, run_name=f"{name} {stamp}", tags={"ipa.kind": "replay-experiment", "ipa.experiment": name}
    )
    parent_id = parent.info.run_id
    now = int(datetime.now(UTC).timestamp() * 1000)
    for row in table.to_dict("records"):
        cell = Cell(**{k: row[k] for k in Cell.__dataclass_fields__})
        label = " ".join(str(v) for v in asdict(cell).values())
        child = client.create_run(
            experiment, run_name=label, tags={"mlflow.parentRunId": parent_id, "ipa.experiment": name}
        )
        params = [
            Param(k, str(v))
            for k, v in {
                **asdict(cell),
                "profile": row["profile"],
                "forecaster_used": row["forecaster_used"],
            }.items()
        ]
        metrics = [Metric(m, float(row[m]), now, 0) for m in METRICS if math.isfinite(float(row[m]))]
        client.log_batch(child.info.run_id, params=params, metrics=metrics)
        client.set_terminated(child.info.run_id, "FINISHED")
    client.log_artifacts(parent_id, str(folder))
    client.set_terminated(parent_id, "FINISHED")
    return parent_id
