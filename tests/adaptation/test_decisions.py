"""The decision record: one flat row per tick, the day's table, one MLflow run per pipeline and day."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from ipa_tasks.adaptation.decisions import (
    EXPERIMENT,
    day_table_path,
    decision_row,
    decisions_plot,
    read_decisions,
    record_tick,
)

PLAN = {
    "pipeline": "p",
    "policy": "ipa",
    "solver": "gurobi",
    "status": "optimal",
    "degraded": False,
    "reason": "",
    "load_rps": 30.0,
    "sla_s": 0.02,
    "latency_s": 0.01,
    "total_cores": 3,
    "build_time_s": 0.004,
    "solve_time_s": 0.001,
    "terms": {
        "objective": 13.0,
        "accuracy": 0.8,
        "accuracy_term": 16.0,
        "cost_term": 3.0,
        "batch_term": 0.0,
        "change_term": 0.0,
    },
    "stages": [
        {"stage": "detect", "variant": "d", "batch_size": 2, "cores": 1, "replicas": 2},
        {"stage": "classify", "variant": "c", "batch_size": 8, "cores": 1, "replicas": 1},
    ],
}


def tick(load: float, status: str = "applied", **extra) -> dict:
    return {
        "pipeline": "p",
        "observation": {"rates": [load - 5, load], "source": "local", "missing": 0, "fallback": False},
        "forecast": {"rps": load + 2, "forecaster": "window-max", "horizon_s": 40},
        "plan": {**PLAN, "load_rps": load + 2},
        "steps": [{"kind": "scale_out"}],
        "apply": {"status": status, "duration_s": 0.3, "message": "applied 1 step(s)"},
        "observe_s": 0.01,
        "forecast_s": 0.02,
        "decide_s": 0.03,
        **extra,
    }


def test_a_tick_becomes_one_flat_row():
    row = decision_row(tick(30), "run-1", datetime(2026, 12, 1, 10, 0, 30, tzinfo=UTC))
    assert row["time"] == "2026-12-01T10:00:30+00:00"
    assert (row["observed_rps"], row["observed_peak_rps"], row["forecast_rps"]) == (30, 30, 32)
    assert row["configuration"] == "detect=d/b2/c1/x2; classify=c/b8/c1/x1"
    assert row["objective"] == 13.0 and row["total_cores"] == 3 and row["changed"] == 1
    assert row["decision_time_s"] == pytest.approx(0.005) and row["tick_time_s"] == pytest.approx(0.06)


def test_the_row_says_what_ran_when_the_tick_decided():
    running = {"detect": {"variant": "d", "batch_size": 1, "cores": 1, "replicas": 3}}
    row = decision_row({**tick(30), "running": running}, "r", datetime.now(UTC))
    assert row["running"] == "detect=d/b1/c1/x3"


def test_a_day_table_reads_back_with_text_as_text(tmp_path: Path):
    path = tmp_path / "day.csv"
    path.write_text("time,configuration,forecast_rps,message\n2026-12-01T00:00:00+00:00,,,\n")
    table = read_decisions(path)
    assert (
        table.loc[0, "configuration"] == ""
        and table.loc[0, "message"] == ""
        and table.loc[0, "running"] == ""
    )
    assert math.isnan(table.loc[0, "forecast_rps"])


def test_a_tick_without_load_or_plan_still_makes_a_row():
    row = decision_row({"pipeline": "p", "error": "decide: cannot read"}, "r", datetime.now(UTC))
    assert math.isnan(row["forecast_rps"]) and row["configuration"] == "" and row["apply_status"] == "not run"
    assert row["message"] == "decide: cannot read"


def test_ticks_of_a_day_share_one_table_and_one_mlflow_run(tmp_path: Path):
    from mlflow import MlflowClient

    home, uri = tmp_path / "ipa", f"sqlite:///{tmp_path / 'mlflow.db'}"
    lines: list[str] = []
    for i, (load, status) in enumerate([(30, "applied"), (31, "unchanged"), (80, "rolled_back")]):
        at = datetime(2026, 12, 1, 10, 0, tzinfo=UTC) + timedelta(seconds=30 * i)
        extra = {"error": "apply: rolled back"} if status == "rolled_back" else {}
        record_tick(home, uri, tick(load, status, **extra), f"run-{i}", lines.append, at=at)
    record_tick(home, uri, tick(5), "next-day", lines.append, at=datetime(2026, 12, 2, 0, 0, 5, tzinfo=UTC))

    table = pd.read_csv(day_table_path(home, "p", "2026-12-01"))
    assert table["apply_status"].tolist() == ["applied", "unchanged", "rolled_back"]
    assert table["message"].iloc[2] == "apply: rolled back"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = {r.data.tags["ipa.date"]: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"2026-12-01", "2026-12-02"}
    history = client.get_metric_history(runs["2026-12-01"].info.run_id, "forecast_rps")
    # Stepped by the second of the day: 10:00:00, 10:00:30, 10:01:00.
    assert [(m.step, m.value) for m in history] == [(36000, 32), (36030, 33), (36060, 82)]
    assert any("observed peak 80.00 requests/s, forecast 82.00" in line for line in lines)
    assert any("row 3 of" in line for line in lines)


def test_the_plot_has_load_and_cost_panels(tmp_path: Path):
    times = [datetime(2026, 12, 1, 10, minute, tzinfo=UTC) for minute in (0, 1)]
    rows = [decision_row(tick(load), "r", at) for load, at in zip([5, 9], times, strict=True)]
    figure = decisions_plot(pd.DataFrame(rows), "p")
    load_ax, cost_ax = figure.axes[:2]
    assert [line.get_label() for line in load_ax.get_lines()][:2] == [
        "observed peak (last window)",
        "forecast peak of the coming horizon",
    ]
    assert cost_ax.get_ylabel() == "cores of the plan"
    figure.savefig(tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 10_000
