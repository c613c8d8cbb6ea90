"""The profile table format: round trips, and errors that name the file and column."""

from __future__ import annotations

import pandas as pd
import pytest

from ipa_tasks.profiles import PROFILE_COLUMNS, ProfileError, read_profile, variant_accuracy, write_profile
from tests.optimizer.instances import profile_rows


def table() -> pd.DataFrame:
    return pd.DataFrame(profile_rows("p", "s", "v", 0.1, [1, 2, 4], [1, 2], 0.5))


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_round_trip(tmp_path, suffix):
    df = table()
    path = write_profile(df, tmp_path / f"profile{suffix}")
    again = read_profile(path)
    assert list(again.columns) == list(PROFILE_COLUMNS)
    assert len(again) == len(df)
    assert again["latency_p99_s"].tolist() == pytest.approx(
        df.sort_values(["batch_size", "cores"])["latency_p99_s"].tolist(), rel=1e-5
    ) or sorted(again["latency_p99_s"]) == pytest.approx(sorted(df["latency_p99_s"]), rel=1e-5)
    assert again["batch_size"].dtype == "int64"


def test_missing_column_is_named(tmp_path):
    path = tmp_path / "p.csv"
    table().drop(columns=["latency_p95_s"]).to_csv(path, index=False)
    with pytest.raises(ProfileError, match=r"p\.csv: missing column\(s\) latency_p95_s"):
        read_profile(path)


def test_non_numeric_column_is_named(tmp_path):
    path = tmp_path / "p.csv"
    df = table()
    df["throughput_rps"] = df["throughput_rps"].astype(str)
    df.loc[0, "throughput_rps"] = "fast"
    df.to_csv(path, index=False)
    with pytest.raises(ProfileError, match="column 'throughput_rps' is not float64"):
        read_profile(path)


def test_duplicate_keys_and_unknown_source_are_rejected(tmp_path):
    df = table()
    with pytest.raises(ProfileError, match="share a key"):
        write_profile(pd.concat([df, df.iloc[:1]]), tmp_path / "p.csv")
    df.loc[0, "source"] = "guessed"
    with pytest.raises(ProfileError, match="unknown value"):
        write_profile(df, tmp_path / "p.csv")


def test_unknown_format(tmp_path):
    with pytest.raises(ProfileError, match="unknown profile format"):
        write_profile(table(), tmp_path / "p.xlsx")


def test_variant_accuracy_ignores_missing_values():
    df = table()
    assert variant_accuracy(df) == {}
    df["accuracy"] = 0.75
    assert variant_accuracy(df) == {("s", "v"): 0.75}


def test_accuracy_outside_unit_interval_is_rejected(tmp_path):
    df = table()
    df["accuracy"] = 0.9
    df.loc[2, "accuracy"] = 91.0  # a percentage where a fraction belongs
    with pytest.raises(ProfileError, match=r"'accuracy' must be in \[0, 1\]"):
        write_profile(df, tmp_path / "p.csv")


@pytest.mark.parametrize("column", ["latency_p50_s", "latency_p99_s", "throughput_rps"])
@pytest.mark.parametrize("value", [float("nan"), 0.0, -5.0, float("inf")])
def test_non_positive_or_missing_latency_and_throughput_are_rejected(tmp_path, column, value):
    path = tmp_path / "p.csv"
    df = table()
    df.loc[3, column] = value
    df.to_csv(path, index=False)
    with pytest.raises(ProfileError, match=rf"p\.csv: column '{column}' must be a positive finite number"):
        read_profile(path)
