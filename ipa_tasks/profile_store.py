"""A filesystem store of published profile tables, with quarantine for tables that fail their checks.

A profiling round ends with :meth:`ProfileStore.publish`. A table whose
:class:`~ipa_tasks.profile_checks.ProfileCheck` passed becomes the pipeline's current profile and is kept in
its history; one that failed is quarantined next to its report, and the current profile stays the last good
one. Layout under ``root``::

    <pipeline>/current.parquet                       the last good table (what planning reads)
    <pipeline>/history/<round_id>.parquet            every published table
    <pipeline>/history/<round_id>.report.json        ... and its check report
    <pipeline>/quarantine/<round_id>/profile.parquet a table that failed (.csv if Parquet cannot hold it)
    <pipeline>/quarantine/<round_id>/report.json     ... and why

Every file is written to a temporary file in its folder and moved into place with ``os.replace``, so a
reader never sees half a table, even when a round is killed while writing.

:meth:`ProfileStore.compare_with_current` is the drift check of a refresh: how each variant's accuracy and
latency moved against the published profile.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from ipa_tasks.atomic_files import atomic_write
from ipa_tasks.profile_checks import ProfileCheck
from ipa_tasks.profiles import coerce_profile, read_profile, variant_accuracy

PIPELINE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
# Airflow run ids look like "manual__2026-11-23T10:00:00+00:00", so ':' and '+' are allowed in round ids.
ROUND_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,199}")


@dataclass(frozen=True)
class PublishResult:
    """What :meth:`ProfileStore.publish` did with one table."""

    outcome: Literal["published", "quarantined"]
    table_path: Path
    """``current.parquet``, or the quarantined table."""
    report_path: Path
    history_path: Path | None
    """The copy under ``history/`` (None when quarantined)."""
    message: str

    @property
    def published(self) -> bool:
        return self.outcome == "published"


class ProfileStore:
    """Published and quarantined profile tables of every pipeline, under one folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def current_path(self, pipeline: str) -> Path:
        return self._pipeline_dir(pipeline) / "current.parquet"

    def current(self, pipeline: str) -> pd.DataFrame | None:
        """The last published table of ``pipeline``, or None if none was published yet."""
        path = self.current_path(pipeline)
        return read_profile(path) if path.exists() else None

    def publish(self, pipeline: str, df: pd.DataFrame, check: ProfileCheck, round_id: str) -> PublishResult:
        """Make ``df`` the current profile if ``check`` passed, otherwise quarantine it with its report."""
        _validated(pipeline, PIPELINE_NAME, "pipeline name")
        _validated(round_id, ROUND_ID, "round id")
        if check.success:
            return self._publish(pipeline, df, check, round_id)
        return self.quarantine(pipeline, df, check, round_id)

    def compare_with_current(
        self,
        pipeline: str,
        new_df: pd.DataFrame,
        accuracy_threshold: float = 0.02,
        latency_threshold: float = 0.20,
    ) -> list[dict[str, Any]]:
        """Drift of every (stage, variant) that is in both ``new_df`` and the current profile.

        Per variant: the absolute change in accuracy, and the relative change in the median p50 latency over
        the (batch size, cores) rows both tables have. ``flagged`` is true when a change is beyond its
        threshold; ``reasons`` says which. Empty when nothing is published yet. A change that cannot be
        computed (accuracy unknown, no common rows) is None and never flags.
        """
        current = self.current(pipeline)
        if current is None:
            return []
        before_accuracy, after_accuracy = variant_accuracy(current), variant_accuracy(new_df)
        merged = current.merge(
            new_df, on=["stage", "variant", "batch_size", "cores"], suffixes=("_before", "_after")
        ).dropna(subset=["latency_p50_s_before", "latency_p50_s_after"])
        pairs = sorted(
            set(map(tuple, current[["stage", "variant"]].to_numpy()))
            & set(map(tuple, new_df[["stage", "variant"]].to_numpy()))
        )
        rows = []
        for stage, variant in pairs:
            common = merged[(merged["stage"] == stage) & (merged["variant"] == variant)]
            rows.append(
                _drift_row(
                    stage,
                    variant,
                    before_accuracy.get((stage, variant)),
                    after_accuracy.get((stage, variant)),
                    common,
                    accuracy_threshold,
                    latency_threshold,
                )
            )
        return rows

    def _pipeline_dir(self, pipeline: str) -> Path:
        return self.root / _validated(pipeline, PIPELINE_NAME, "pipeline name")

    def _publish(self, pipeline: str, df: pd.DataFrame, check: ProfileCheck, round_id: str) -> PublishResult:
        table = coerce_profile(df, f"profile of {pipeline!r}, round {round_id!r}")
        others = sorted(set(table["pipeline"]) - {pipeline})
        if others:
            raise ValueError(f"cannot publish rows of pipeline(s) {others} as the profile of {pipeline!r}")
        history = self._pipeline_dir(pipeline) / "history"
        history_path = history / f"{round_id}.parquet"
        report_path = history / f"{round_id}.report.json"
        write_parquet = _parquet_writer(table)
        # History first: current.parquet then always has a copy and a report behind it.
        atomic_write(history_path, write_parquet)
        atomic_write(report_path, _json_writer(_report_document(pipeline, round_id, "published", check)))
        current = self.current_path(pipeline)
        atomic_write(current, write_parquet)
        return PublishResult(
            outcome="published",
            table_path=current,
            report_path=report_path,
            history_path=history_path,
            message=f"published {pipeline} round {round_id}: {len(table)} rows checked and now current",
        )

    def quarantine(
        self, pipeline: str, df: pd.DataFrame, check: ProfileCheck, round_id: str
    ) -> PublishResult:
        """Keep ``df`` and its failed check under ``quarantine/<round_id>/``; the current profile stays."""
        _validated(round_id, ROUND_ID, "round id")
        folder = self._pipeline_dir(pipeline) / "quarantine" / round_id
        table_path = _write_raw_table(folder, df)
        report_path = folder / "report.json"
        atomic_write(report_path, _json_writer(_report_document(pipeline, round_id, "quarantined", check)))
        kept = (
            "the current profile is unchanged"
            if self.current_path(pipeline).exists()
            else "none is published"
        )
        first = check.failures[0]["description"] if check.failures else "no failure recorded"
        return PublishResult(
            outcome="quarantined",
            table_path=table_path,
            report_path=report_path,
            history_path=None,
            message=f"quarantined {pipeline} round {round_id}: {len(check.failures)} check(s) failed "
            f"(first: {first}); {kept}",
        )


def _validated(name: str, pattern: re.Pattern[str], what: str) -> str:
    """``name`` if it is safe as one path component; otherwise a ValueError saying what is allowed."""
    if not isinstance(name, str) or not pattern.fullmatch(name) or ".." in name:
        allowed = "letters, digits and . _ - : +" if pattern is ROUND_ID else "letters, digits and . _ -"
        raise ValueError(
            f"invalid {what} {name!r}: use {allowed} only (no path separators, no '..'), "
            "starting with a letter or digit, at most 200 characters"
        )
    return name


def _drift_row(
    stage: str,
    variant: str,
    accuracy_before: float | None,
    accuracy_after: float | None,
    common: pd.DataFrame,
    accuracy_threshold: float,
    latency_threshold: float,
) -> dict[str, Any]:
    accuracy_change = (
        None if accuracy_before is None or accuracy_after is None else accuracy_after - accuracy_before
    )
    latency_before = float(np.median(common["latency_p50_s_before"])) if len(common) else None
    latency_after = float(np.median(common["latency_p50_s_after"])) if len(common) else None
    latency_change = (
        latency_after / latency_before - 1.0
        if latency_before is not None and latency_after is not None
        else None
    )
    reasons = []
    if accuracy_change is not None and abs(accuracy_change) > accuracy_threshold:
        reasons.append(f"accuracy {accuracy_change:+.3f} (threshold ±{accuracy_threshold:g})")
    if latency_change is not None and abs(latency_change) > latency_threshold:
        reasons.append(f"median p50 latency {latency_change:+.0%} (threshold ±{latency_threshold:.0%})")
    return {
        "stage": stage,
        "variant": variant,
        "accuracy_before": accuracy_before,
        "accuracy_after": accuracy_after,
        "accuracy_change": accuracy_change,
        "latency_p50_before_s": latency_before,
        "latency_p50_after_s": latency_after,
        "latency_change": latency_change,
        "common_rows": len(common),
        "flagged": bool(reasons),
        "reasons": reasons,
    }


def _report_document(pipeline: str, round_id: str, outcome: str, check: ProfileCheck) -> dict[str, Any]:
    return {
        "pipeline": pipeline,
        "round_id": round_id,
        "outcome": outcome,
        "summary": check.summary(),
        "failures": check.failures,
        "great_expectations": check.report,
    }


def _write_raw_table(folder: Path, df: pd.DataFrame) -> Path:
    """Write a failed table as it came; it may hold values Parquet cannot type, then it is kept as CSV."""
    try:
        path = folder / "profile.parquet"
        atomic_write(path, _parquet_writer(df))
    except (TypeError, ValueError):
        # pyarrow raises ArrowTypeError / ArrowInvalid (subclasses of these) for mixed-type columns.
        path = folder / "profile.csv"
        atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))
    return path


def _parquet_writer(df: pd.DataFrame) -> Callable[[Path], None]:
    return lambda tmp: df.to_parquet(tmp, index=False)


def _json_writer(document: dict[str, Any]) -> Callable[[Path], None]:
    return lambda tmp: tmp.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")
