"""The replay simulator end to end on the shipped pipelines and IPA's windows: deterministic for a seed,
plans that follow the load and land after the time a change takes, violations counted both ways, an
oracle that knows the future, and ``ipa replay`` on the command line."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from ipa_tasks.actuation.config import StageConfig
from ipa_tasks.forecasting.registry import baseline_forecasters
from ipa_tasks.optimizer.planner import Planner
from ipa_tasks.simulation.replay import ReplayOptions, _lands, simulate, window_forecaster
from ipa_tasks.simulation.windows import PATTERNS, load_pattern
from ipa_tasks.spec import resolve_spec_path


@pytest.fixture(scope="module")
def video() -> Planner:
    return Planner.from_files(resolve_spec_path("video"), None)


def forecaster(name: str = "window-max"):
    return window_forecaster(
        name, history_s=120, horizon_s=40, margin=0.1, make=lambda n: baseline_forecasters(40, 0.1)[n]
    )


def test_the_four_windows_are_twenty_minutes_each():
    for name in PATTERNS:
        window = load_pattern(name)
        assert len(window) == 1200 and window.min() >= 0
    with pytest.raises(ValueError, match="unknown load window 'spiky'"):
        load_pattern("spiky")


def test_a_replay_is_deterministic_for_a_seed_and_counts_every_request(video: Planner):
    window = load_pattern("bursty")
    first = simulate(video, video.profile, window, forecaster(), ReplayOptions(seed=3))
    again = simulate(video, video.profile, window, forecaster(), ReplayOptions(seed=3))
    other = simulate(video, video.profile, window, forecaster(), ReplayOptions(seed=4))
    assert json.dumps(first.summary) == json.dumps(again.summary) != json.dumps(other.summary)
    summary = first.summary
    assert summary["requests"] == int(np.floor(np.cumsum(window)[-1] + 0.5)) == len(first.requests)
    assert summary["sla_violations"] == summary["late"] + summary["dropped"]
    assert summary["decisions"] == 40  # the first plan and one every 30 s
    assert summary["core_seconds"] == pytest.approx((first.intervals["total_cores"] * 30).sum())


def test_plans_follow_the_burst_up_and_back_down(video: Planner):
    result = simulate(video, video.profile, load_pattern("bursty"), forecaster())
    cores = result.intervals.set_index("start_s")["total_cores"]
    assert cores.loc[480:720].max() > cores.loc[:240].max()  # the burst is at about 8-12 minutes
    assert cores.loc[1050:].max() < cores.loc[480:720].max()
    assert result.summary["plan_changes"] >= 2


def test_fa2_high_costs_more_and_is_more_accurate_than_ipa(video: Planner):
    window = load_pattern("bursty")
    ours = simulate(video, video.profile, window, forecaster(), ReplayOptions(policy="ipa")).summary
    high = simulate(video, video.profile, window, forecaster(), ReplayOptions(policy="fa2-high")).summary
    assert high["core_seconds"] > ours["core_seconds"] and high["mean_accuracy"] > ours["mean_accuracy"]


def test_the_oracle_plans_for_the_true_peak_ahead():
    load = np.array([10.0] * 60 + [100.0] * 60)
    assert window_forecaster("oracle", history_s=120, horizon_s=40, margin=0.0, make=None)(load, 30) == 100.0
    assert forecaster("window-max")(load, 30) == pytest.approx(11.0)


def test_a_change_lands_after_the_time_it_takes():
    options = ReplayOptions(switch_s=10, scale_out_s=5)
    before = {"a": StageConfig("v", 1, 1, 1), "b": StageConfig("v", 1, 1, 2), "c": StageConfig("v", 1, 1, 2)}
    after = {"a": StageConfig("w", 1, 1, 1), "b": StageConfig("v", 1, 1, 3), "c": StageConfig("v", 4, 1, 1)}
    assert _lands(before, after, 60.0, options) == {"a": 70.0, "b": 65.0, "c": 60.0}


def test_too_little_capacity_shows_as_drops_and_late_requests(video: Planner):
    # A tenfold load the fixed baseline cannot follow: RIM pins the replicas.
    result = simulate(
        video, video.profile, load_pattern("steady-high") * 10, forecaster(), ReplayOptions(policy="rim")
    )
    assert (
        result.summary["dropped"] > 0
        and result.summary["violation_share"] > result.summary["dropped_share"] > 0
    )


def test_ipa_replay_on_the_command_line(tmp_path):
    arguments = ["--spec", "digit-strips", "--window", "steady-low", "--scale", "5", "--json"]
    done = subprocess.run(
        [sys.executable, "-m", "ipa_tasks.cli", "replay", *arguments, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["requests"] > 20_000 and summary["decisions"] == 40
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert (tmp_path / "requests.csv").stat().st_size > 0 and (tmp_path / "intervals.csv").stat().st_size > 0


def test_the_measured_end_to_end_accuracy_is_reported_where_it_was_measured():
    demo = Planner.from_files(resolve_spec_path("digit-strips"), None)
    result = simulate(demo, demo.profile, load_pattern("bursty") * 10, forecaster())
    measured = result.summary["mean_measured_accuracy"]
    # A strip counts only if every digit is read right: far below the product of the stages' accuracies.
    assert 0.3 < measured < result.summary["mean_accuracy"]
    video = Planner.from_files(resolve_spec_path("video"), None)
    assert np.isnan(
        simulate(video, video.profile, load_pattern("bursty"), forecaster()).summary["mean_measured_accuracy"]
    )
