"""The paper's experiments as grids of replays: the grids, what they show on a pipeline (the weights move
cost, a longer interval costs violations the oracle does not pay), the files and the MLflow runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ipa_tasks.simulation.experiments import (
    DEMO_SCALE,
    PREFERENCES,
    cells,
    log_experiment,
    markdown,
    run_experiment,
    write_results,
)


def test_each_experiment_is_its_grid():
    assert len(cells("e2e")) == 7 * 4 * 4
    assert len(cells("preferences", ["video"])) == 3
    assert {c.forecaster for c in cells("predictors", ["video"])} == {
        "lstm",
        "last-value",
        "window-max",
        "oracle",
    }
    assert {(c.interval_s, c.forecaster) for c in cells("intervals", ["video"])} == {
        (i, f) for i in (10, 30, 60, 120) for f in ("window-max", "oracle")
    }
    with pytest.raises(ValueError, match="unknown experiment 'fig9'"):
        cells("fig9")


def test_the_weights_move_cost_and_accuracy_the_way_they_say():
    table = run_experiment("preferences", ["video"]).set_index("preference")
    assert list(table.index) == list(PREFERENCES)
    accuracy, resources = table.loc["accuracy-prioritised"], table.loc["resource-prioritised"]
    assert accuracy["core_seconds"] > resources["core_seconds"]
    assert accuracy["mean_accuracy"] > resources["mean_accuracy"]
    assert (table["profile"] == "synthetic").all() and (table["load_scale"] == 1.0).all()


def test_a_longer_interval_costs_violations_that_forecasting_the_true_peak_avoids():
    table = run_experiment("intervals", ["video"]).set_index(["interval_s", "forecaster"])
    reactive = table.xs("window-max", level="forecaster")["violation_share"]
    assert reactive.loc[120] > reactive.loc[10]
    assert table.loc[(120, "oracle"), "violation_share"] < reactive.loc[120]


def test_results_are_written_and_logged_as_a_parent_run_with_a_child_per_replay(tmp_path: Path):
    from mlflow import MlflowClient

    table = run_experiment("preferences", ["digit-strips"])
    assert (table["profile"] == "measured").all() and (table["load_scale"] == DEMO_SCALE).all()
    written = write_results("preferences", table, tmp_path / "out")
    assert [p.name for p in written] == [
        "results.csv",
        "results.md",
        "mean_accuracy.png",
        "core_seconds.png",
        "violation_share.png",
    ]
    assert "| digit-strips | measured | bursty | accuracy-prioritised |" in markdown("preferences", table)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = log_experiment(uri, "preferences", table, tmp_path / "out")
    client = MlflowClient(uri)
    children = client.search_runs(
        [client.get_run(parent).info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'"
    )
    assert len(children) == 3
    assert {c.data.params["preference"] for c in children} == set(PREFERENCES)
    assert all("core_seconds" in c.data.metrics for c in children)
    assert {a.path for a in client.list_artifacts(parent)} >= {
        "results.csv",
        "results.md",
        "core_seconds.png",
    }


def test_ipa_experiment_on_the_command_line(tmp_path: Path):
    arguments = ["preferences", "--pipelines", "video", "--out", str(tmp_path), "--no-mlflow"]
    done = subprocess.run(
        [sys.executable, "-m", "ipa_tasks.cli", "experiment", *arguments],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "| video | synthetic | bursty | balanced |" in done.stdout
    assert (tmp_path / "results.csv").exists()
