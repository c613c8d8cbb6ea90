"""The Great Expectations suite of a profile table: good tables pass, each kind of breakage fails its rule."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from ipa_tasks.latency_model import complete_profile
from ipa_tasks.profile_checks import (
    GROUP_COLUMNS,
    LATENCY_VS_SMALLER_BATCHES,
    THROUGHPUT_VS_LATENCY,
    ProfileCheck,
    check_profile,
    latency_vs_smaller_batches,
    throughput_vs_latency,
)
from ipa_tasks.synthetic_profiles import synthetic_profile
from tests.optimizer.instances import profile_rows

BETWEEN = "expect_column_values_to_be_between"


def measured_table() -> pd.DataFrame:
    """Two variants as a profiling job writes them: measured rows, 20 repetitions, known accuracy."""
    rows = profile_rows("toy", "detect", "small", 0.05, [1, 2, 4, 8], [1, 2], 0.5)
    rows += profile_rows("toy", "detect", "big", 0.2, [1, 2, 4, 8], [1, 2], 0.8)
    df = pd.DataFrame(rows)
    df["accuracy"] = np.where(df["variant"] == "big", 0.9, 0.8)
    return df


def row(df: pd.DataFrame, variant: str = "small", batch_size: int = 8, cores: int = 1) -> int:
    """Index of one row of :func:`measured_table`."""
    match = df.index[(df["variant"] == variant) & (df["batch_size"] == batch_size) & (df["cores"] == cores)]
    return int(match[0])


def failed(check: ProfileCheck) -> set[tuple[str, str | None]]:
    return {(f["expectation"], f["column"]) for f in check.failures}


def set_p50(df: pd.DataFrame, index: int, p50: float) -> None:
    """Move one row's latency curve point, keeping its quantiles ordered and its throughput consistent."""
    factor = p50 / df.loc[index, "latency_p50_s"]
    for column in ("latency_p50_s", "latency_p95_s", "latency_p99_s"):
        df.loc[index, column] *= factor
    df.loc[index, "throughput_rps"] = df.loc[index, "batch_size"] / p50


@pytest.fixture(scope="module")
def video_check() -> ProfileCheck:
    return check_profile(synthetic_profile("video"))


def test_synthetic_table_passes_although_its_rows_have_no_repetitions(video_check):
    assert video_check.success, video_check.summary()
    assert video_check.failures == []
    assert video_check.summary().startswith("Profile check passed:")
    assert video_check.report["profile_check"]["rows"] == len(synthetic_profile("video"))


def test_report_is_strict_json_with_every_expectation_described(video_check):
    report = json.loads(json.dumps(video_check.report, allow_nan=False))
    assert report["success"] is True
    assert report["statistics"]["evaluated_expectations"] == len(report["expectations"]) >= 20
    assert all(entry["description"] for entry in report["expectations"])
    types = {entry["expectation_type"] for entry in report["expectations"]}
    assert {
        "expect_column_values_to_not_be_null",
        BETWEEN,
        "expect_column_pair_values_a_to_be_greater_than_b",
        "expect_compound_columns_to_be_unique",
    } <= types


def test_measured_table_passes():
    check = check_profile(measured_table())
    assert check.success, check.summary()


def test_fitted_rows_of_the_latency_model_pass_without_repetitions():
    completed = complete_profile(measured_table(), {"detect": [1, 2, 3, 4, 6, 8]})
    assert (completed["source"] == "fitted").sum() == 8
    check = check_profile(completed)
    assert check.success, check.summary()


def nan_latency(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[row(df), "latency_p50_s"] = np.nan
    return df


def latency_falls_with_batch(df: pd.DataFrame) -> pd.DataFrame:
    set_p50(df, row(df, batch_size=8), 0.8 * df.loc[row(df, batch_size=4), "latency_p50_s"])
    return df


def throughput_too_high(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[row(df), "throughput_rps"] *= 1.5
    return df


def p95_above_p99(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[row(df), "latency_p95_s"] = df.loc[row(df), "latency_p99_s"] * 1.1
    return df


def accuracy_above_one(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[row(df), "accuracy"] = 1.3
    return df


def few_repetitions(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[row(df), "repetitions"] = 5
    return df


def infinite_throughput(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[row(df), "throughput_rps"] = np.inf
    return df


def duplicate_key(df: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([df, df.loc[[row(df)]]], ignore_index=True)


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (nan_latency, {("expect_column_values_to_not_be_null", "latency_p50_s")}),
        (latency_falls_with_batch, {(BETWEEN, LATENCY_VS_SMALLER_BATCHES)}),
        (throughput_too_high, {(BETWEEN, THROUGHPUT_VS_LATENCY)}),
        (
            p95_above_p99,
            {("expect_column_pair_values_a_to_be_greater_than_b", "latency_p99_s, latency_p95_s")},
        ),
        (accuracy_above_one, {(BETWEEN, "accuracy")}),
        (few_repetitions, {(BETWEEN, "repetitions")}),
        (infinite_throughput, {(BETWEEN, "throughput_rps")}),
        (
            duplicate_key,
            {("expect_compound_columns_to_be_unique", "pipeline, stage, variant, batch_size, cores")},
        ),
    ],
    ids=lambda value: getattr(value, "__name__", ""),
)
def test_broken_table_fails_exactly_its_rule(
    breakage: Callable[[pd.DataFrame], pd.DataFrame], expected: set[tuple[str, str]]
):
    check = check_profile(breakage(measured_table()))
    assert not check.success
    assert failed(check) == expected, check.summary()
    assert check.failures[0]["unexpected_count"] >= 1
    json.dumps(check.report, allow_nan=False)


def test_failure_names_the_offending_row_and_value():
    (failure,) = check_profile(latency_falls_with_batch(measured_table())).failures
    assert failure["unexpected_count"] == 1
    # The ratio includes the default 0.1 ms slack: (0.8 p + 0.1 ms) / p for this row's p of 125 ms.
    assert failure["unexpected_values"] == [pytest.approx(0.8, abs=1e-3)]
    (bad_row,) = failure["unexpected_rows"]
    assert {k: bad_row[k] for k in ("variant", "batch_size", "cores")} == {
        "variant": "small",
        "batch_size": 8,
        "cores": 1,
    }


def test_summary_says_what_failed_in_plain_english():
    lines = check_profile(few_repetitions(accuracy_above_one(measured_table()))).summary().splitlines()
    assert lines[0].startswith("Profile check FAILED: 2 of ")
    assert any("accuracy is in [0, 1]" in line and "1.3" in line for line in lines[1:])
    assert any("at least 20 timed repetitions" in line for line in lines[1:])


def test_tolerances_are_parameters():
    df = measured_table()
    set_p50(df, row(df, batch_size=8), 0.95 * df.loc[row(df, batch_size=4), "latency_p50_s"])
    df.loc[row(df, batch_size=2), "throughput_rps"] *= 1.2
    assert check_profile(df).success, "a 5 % dip and a 20 % throughput gap are within the defaults"
    strict = check_profile(df, monotone_tolerance=0.01, throughput_tolerance=0.1, min_repetitions=21)
    assert failed(strict) == {
        (BETWEEN, LATENCY_VS_SMALLER_BATCHES),
        (BETWEEN, THROUGHPUT_VS_LATENCY),
        (BETWEEN, "repetitions"),
    }


def test_absolute_slack_forgives_timer_noise_of_microsecond_models_only():
    df = measured_table()
    first = df.index[0]
    group = (df[GROUP_COLUMNS] == df.loc[first, GROUP_COLUMNS]).all(axis=1)
    # A batch-flat model of about 30 µs whose batch-8 run came out 30 % faster than batch 4: noise.
    df.loc[group, "latency_p50_s"] = 30e-6
    df.loc[group & (df["batch_size"] == 8), "latency_p50_s"] = 21e-6
    for column in ("latency_p95_s", "latency_p99_s"):
        df.loc[group, column] = df.loc[group, "latency_p50_s"]
    df.loc[group, "throughput_rps"] = df.loc[group, "batch_size"] / df.loc[group, "latency_p50_s"]
    assert check_profile(df).success
    assert failed(check_profile(df, monotone_slack_s=0.0)) == {(BETWEEN, LATENCY_VS_SMALLER_BATCHES)}
    # The same 30 % drop at millisecond scale is not noise.
    df.loc[group, ["latency_p50_s", "latency_p95_s", "latency_p99_s"]] *= 100
    df.loc[group, "throughput_rps"] /= 100
    assert failed(check_profile(df)) == {(BETWEEN, LATENCY_VS_SMALLER_BATCHES)}


def test_missing_column_is_reported_not_raised():
    check = check_profile(measured_table().drop(columns=["throughput_rps"]))
    assert not check.success
    missing = next(f for f in check.failures if f["expectation"] == "expect_table_columns_to_match_set")
    assert "every column of the profile format is present" in check.summary()
    assert missing["observed_value"] is not None
    assert "throughput_rps" in {f["column"] for f in check.failures}


def test_running_maximum_catches_a_curve_that_sinks_a_little_at_every_step():
    df = pd.DataFrame(
        {
            "pipeline": "p",
            "stage": "s",
            "variant": ["v"] * 4 + ["w"] * 2,
            "cores": 1,
            "batch_size": [8, 1, 4, 2, 1, 2],
            "latency_p50_s": [0.729, 1.0, 0.81, 0.9, 5.0, np.nan],
        }
    )
    ratios = latency_vs_smaller_batches(df)
    # Ratios come back in the frame's own row order; the first batch of each variant has none.
    assert ratios.tolist()[:4] == pytest.approx([0.729, np.nan, 0.81, 0.9], nan_ok=True)
    assert np.isnan(ratios.iloc[4]) and np.isnan(ratios.iloc[5])


def test_throughput_ratio_is_one_when_throughput_matches_latency():
    df = pd.DataFrame(
        {"batch_size": [4, 4, 0], "latency_p50_s": [0.5, 0.5, 0.5], "throughput_rps": [8.0, 4.0, 1.0]}
    )
    assert throughput_vs_latency(df).tolist() == pytest.approx([1.0, 0.5, np.nan], nan_ok=True)


def test_importing_the_module_does_not_import_great_expectations():
    code = "import sys, ipa_tasks.profile_checks; sys.exit('great_expectations' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
