"""The profile store: the last good table stays current, bad ones are quarantined with their report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import ipa_tasks.profile_store as profile_store
from ipa_tasks.profile_checks import ProfileCheck, check_profile
from ipa_tasks.profile_store import ProfileStore
from tests.optimizer.instances import profile_rows


def table(pipeline: str = "toy", accuracy: float = 0.8, slowdown: float = 1.0) -> pd.DataFrame:
    rows = profile_rows(pipeline, "detect", "small", 0.05 * slowdown, [1, 2, 4], [1, 2], 0.5)
    rows += profile_rows(pipeline, "detect", "big", 0.2, [1, 2, 4], [1, 2], 0.8)
    df = pd.DataFrame(rows)
    df["accuracy"] = np.where(df["variant"] == "big", 0.9, accuracy)
    return df


def broken(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df.loc[0, "latency_p50_s"] = np.nan
    df.loc[1, "accuracy"] = 1.3
    return df


@pytest.fixture(scope="module")
def good() -> tuple[pd.DataFrame, ProfileCheck]:
    df = table()
    return df, check_profile(df)


@pytest.fixture(scope="module")
def bad() -> tuple[pd.DataFrame, ProfileCheck]:
    df = broken(table(accuracy=0.7))
    check = check_profile(df)
    assert not check.success
    return df, check


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_nothing_is_current_before_the_first_publish(tmp_path):
    store = ProfileStore(tmp_path)
    assert store.current("toy") is None
    assert store.compare_with_current("toy", table()) == []


def test_good_table_becomes_current_and_enters_history(tmp_path, good):
    df, check = good
    result = ProfileStore(tmp_path).publish("toy", df, check, "r1")
    assert result.published and result.outcome == "published"
    assert result.table_path == tmp_path / "toy" / "current.parquet"
    assert result.history_path == tmp_path / "toy" / "history" / "r1.parquet"
    assert "r1" in result.message and "published" in result.message
    current = ProfileStore(tmp_path).current("toy")
    assert current is not None
    assert len(current) == len(df)
    assert current["latency_p50_s"].sum() == pytest.approx(df["latency_p50_s"].sum())
    report = json.loads(result.report_path.read_text())
    assert report["outcome"] == "published" and report["great_expectations"]["success"] is True


def test_bad_table_is_quarantined_with_its_report_and_the_last_good_one_stays(tmp_path, good, bad):
    store = ProfileStore(tmp_path)
    store.publish("toy", *good, round_id="r1")
    before = store.current_path("toy").read_bytes()

    result = store.publish("toy", *bad, round_id="r2")

    assert not result.published and result.outcome == "quarantined"
    assert result.history_path is None
    assert store.current_path("toy").read_bytes() == before
    assert "the current profile is unchanged" in result.message
    assert result.table_path == tmp_path / "toy" / "quarantine" / "r2" / "profile.parquet"
    quarantined = pd.read_parquet(result.table_path)
    assert quarantined["latency_p50_s"].isna().sum() == 1, "the table is kept as it came, NaN included"
    report = json.loads(result.report_path.read_text())
    assert report["outcome"] == "quarantined" and report["round_id"] == "r2"
    assert report["great_expectations"]["success"] is False
    assert {f["column"] for f in report["failures"]} == {"latency_p50_s", "accuracy"}
    assert "Profile check FAILED" in report["summary"]


def test_history_grows_only_on_success(tmp_path, good, bad):
    store = ProfileStore(tmp_path)
    store.publish("toy", *good, round_id="r1")
    store.publish("toy", *bad, round_id="r2")
    store.publish("toy", *good, round_id="r3")
    assert files(tmp_path / "toy" / "history") == [
        "r1.parquet",
        "r1.report.json",
        "r3.parquet",
        "r3.report.json",
    ]
    assert files(tmp_path / "toy" / "quarantine") == ["r2/profile.parquet", "r2/report.json"]


def test_no_temporary_files_are_left(tmp_path, good, bad):
    store = ProfileStore(tmp_path)
    store.publish("toy", *good, round_id="r1")
    store.publish("toy", *bad, round_id="r2")
    assert not [name for name in files(tmp_path) if name.endswith(".tmp") or "/." in f"/{name}"]


def test_a_write_that_dies_midway_leaves_the_current_table_and_no_temporary_file(tmp_path, good, monkeypatch):
    store = ProfileStore(tmp_path)
    store.publish("toy", *good, round_id="r1")
    before = store.current_path("toy").read_bytes()

    def dies_midway(df):
        def write(tmp: Path) -> None:
            tmp.write_bytes(b"PAR1 half a table")
            raise OSError("disk full")

        return write

    monkeypatch.setattr(profile_store, "_parquet_writer", dies_midway)
    with pytest.raises(OSError, match="disk full"):
        store.publish("toy", *good, round_id="r2")
    assert store.current_path("toy").read_bytes() == before
    assert not [name for name in files(tmp_path) if name.endswith(".tmp")]


def test_table_that_parquet_cannot_hold_is_quarantined_as_csv(tmp_path):
    df = table()
    df["latency_p50_s"] = df["latency_p50_s"].astype(object)
    df.loc[0, "latency_p50_s"] = "fast"
    check = check_profile(df)
    assert not check.success
    result = ProfileStore(tmp_path).publish("toy", df, check, "r1")
    assert result.table_path.name == "profile.csv"
    assert "fast" in result.table_path.read_text()
    assert files(tmp_path) == ["toy/quarantine/r1/profile.csv", "toy/quarantine/r1/report.json"]


@pytest.mark.parametrize(
    "round_id", ["../r1", "a/b", "a\\b", "..", "r..1", ".hidden", "", "-r", "r 1", "x" * 201]
)
def test_unsafe_round_ids_are_refused(tmp_path, good, round_id):
    with pytest.raises(ValueError, match="invalid round id"):
        ProfileStore(tmp_path).publish("toy", *good, round_id=round_id)
    assert files(tmp_path) == []


@pytest.mark.parametrize("pipeline", ["../toy", "toy/x", "..", ""])
def test_unsafe_pipeline_names_are_refused(tmp_path, good, pipeline):
    store = ProfileStore(tmp_path)
    with pytest.raises(ValueError, match="invalid pipeline name"):
        store.publish(pipeline, *good, round_id="r1")
    with pytest.raises(ValueError, match="invalid pipeline name"):
        store.current(pipeline)


def test_airflow_run_ids_are_valid_round_ids(tmp_path, good):
    result = ProfileStore(tmp_path).publish("toy", *good, round_id="manual__2026-11-23T10:00:00+00:00")
    assert result.history_path is not None and result.history_path.exists()


def test_rows_of_another_pipeline_are_not_published(tmp_path, good):
    with pytest.raises(ValueError, match="pipeline"):
        ProfileStore(tmp_path).publish("other", *good, round_id="r1")
    assert files(tmp_path) == []


def test_drift_flags_an_accuracy_drop_and_a_latency_rise_but_not_a_small_change(tmp_path, good):
    store = ProfileStore(tmp_path)
    store.publish("toy", *good, round_id="r1")

    dropped = store.compare_with_current("toy", table(accuracy=0.75))
    slower = store.compare_with_current("toy", table(slowdown=1.5))
    steady = store.compare_with_current("toy", table(accuracy=0.81, slowdown=1.01))

    def flags(drift):
        return {row["variant"]: row["flagged"] for row in drift}

    assert flags(dropped) == {"big": False, "small": True}
    assert flags(slower) == {"big": False, "small": True}
    assert flags(steady) == {"big": False, "small": False}
    small = {row["variant"]: row for row in dropped}["small"]
    assert small["accuracy_change"] == pytest.approx(-0.05)
    assert small["reasons"] == ["accuracy -0.050 (threshold ±0.02)"]
    small = {row["variant"]: row for row in slower}["small"]
    assert small["latency_change"] == pytest.approx(0.5)
    assert small["common_rows"] == 6
    assert "median p50 latency +50%" in small["reasons"][0]
    json.dumps(dropped + slower + steady, allow_nan=False)


def test_drift_compares_only_common_batch_sizes_and_variants(tmp_path, good):
    store = ProfileStore(tmp_path)
    store.publish("toy", *good, round_id="r1")
    new = table(slowdown=1.5)
    new = new[~((new["variant"] == "small") & (new["batch_size"] == 4))]
    new = pd.concat([new, pd.DataFrame(profile_rows("toy", "detect", "huge", 1.0, [1], [1], 0.5))])
    drift = {row["variant"]: row for row in store.compare_with_current("toy", new)}
    assert set(drift) == {"big", "small"}
    assert drift["small"]["common_rows"] == 4
    assert drift["small"]["latency_change"] == pytest.approx(0.5)
