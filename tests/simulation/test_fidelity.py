"""The fidelity check on a demo run's folder: the simulator replays the same window with the same profile,
and the table puts the live numbers next to the simulated ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from ipa_tasks.simulation.fidelity import replay_demo_run, write_fidelity

SMOKE = Path(__file__).resolve().parents[1] / "demo" / "smoke.yaml"


def demo_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "run"
    folder.mkdir()
    run = {
        "spec": str(SMOKE),
        "trace_start_s": 1_863_030,
        "seconds": 60,
        "scale": 1.0,
        "interval_s": 15,
        "seed": 0,
    }
    (folder / "demo.json").write_text(json.dumps({**run, "profile_source": "test"}))
    shutil.copy(SMOKE.with_name("smoke.profile.csv"), folder / "profile.csv")
    outcomes = ["ok"] * 90 + ["dropped"] * 10
    latencies = [0.01] * 89 + [2.0] + [None] * 10  # one served after the 1 s SLA
    pd.DataFrame({"outcome": outcomes, "latency_s": latencies}).to_csv(folder / "requests.csv", index=False)
    pd.DataFrame(
        {
            "time": ["2026-12-01T00:00:15+00:00", "2026-12-01T00:00:30+00:00"],
            "configuration": ["", "classify=knn/b1/c1/x1"],
            "accuracy": [None, 0.98],
            "changed": [0, 0],
            "forecaster": ["", "window-max"],
        }
    ).to_csv(folder / "decisions.csv", index=False)
    return folder


def test_the_live_run_is_set_against_the_simulated_one(tmp_path: Path):
    folder = demo_folder(tmp_path)
    table, run = replay_demo_run(folder)
    rows = table.set_index("measure")
    assert rows.loc["requests", "live"] == 100
    assert rows.loc["throughput_rps", "live"] == pytest.approx(90 / 60)
    assert rows.loc["violation_share", "live"] == pytest.approx(11 / 100)
    assert rows.loc["dropped_share", "live"] == pytest.approx(0.1)
    assert rows.loc["mean_accuracy", "live"] == pytest.approx(0.98)
    # The simulator replayed the same window: its requests are the trace's.
    assert rows.loc["requests", "simulated"] > 0 and run["forecaster"] == "window-max"
    assert (table["difference"] == table["live"] - table["simulated"]).all()
    path = write_fidelity(folder, table, run)
    assert "| p99_latency_s |" in path.read_text() and (folder / "fidelity.csv").exists()


def test_a_folder_that_is_not_a_demo_run_says_so(tmp_path: Path):
    with pytest.raises(ValueError, match=r"not a complete demo run.*run ipa demo first"):
        replay_demo_run(tmp_path)
