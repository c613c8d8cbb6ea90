"""Great Expectations checks for one profile table, before it may replace the published profile.

:func:`check_profile` runs a GX 1.x suite, built in an ephemeral context (no files, no network), on a
DataFrame in the format of :mod:`ipa_tasks.profiles`. It takes the raw table, not one that went through
:func:`~ipa_tasks.profiles.coerce_profile`, so a broken measurement is reported row by row instead of
stopping at the first bad value. The suite checks that:

* every column of the format is present, the table has rows and one row per key;
* key and numeric columns have no missing values, ``source`` is a known value;
* latencies and throughput are positive and finite, memory is finite and not negative, batch size and
  cores are at least 1, and ``latency_p50_s <= latency_p95_s <= latency_p99_s``;
* p50 latency does not fall as the batch grows, within a relative tolerance plus an absolute one (timer
  and scheduling noise, which dominates for models that take microseconds), inside each (pipeline,
  stage, variant, cores) group;
* ``throughput_rps`` is within a tolerance of ``batch_size / latency_p50_s``;
* accuracy is in [0, 1] where it is known;
* rows with ``source == "measured"`` rest on enough timed repetitions (fitted and synthetic rows have 0).

The two rules across rows are derived as ratio columns in a copy of the table (:func:`with_derived_columns`)
and then checked with GX's own ``expect_column_values_to_be_between``, so a failure shows the offending
ratio and the row's key. Great Expectations is imported on first use, not with this module: the import
takes seconds and DAG files import this module at parse time.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ipa_tasks.profiles import KEY_COLUMNS, PROFILE_COLUMNS, SOURCES

if TYPE_CHECKING:
    from great_expectations.expectations import Expectation

LATENCY_VS_SMALLER_BATCHES = "latency_vs_smaller_batches"
"""Derived: p50 latency, plus the absolute tolerance, over the largest p50 at smaller batch sizes of the same
group (NaN for the first)."""
THROUGHPUT_VS_LATENCY = "throughput_vs_latency"
"""Derived: ``throughput_rps`` over ``batch_size / latency_p50_s`` (1.0 when they agree)."""
GROUP_COLUMNS = ["pipeline", "stage", "variant", "cores"]
"""A batch-size curve: the pipeline is part of it so that a merged table of several pipelines works."""
NUMERIC_COLUMNS = [c for c, dtype in PROFILE_COLUMNS.items() if dtype != "str" and c != "accuracy"]
# GX's between-expectation lets +inf through an open upper bound; the largest float as the bound rejects
# it and, unlike math.inf, keeps the suite's kwargs valid JSON.
FINITE_MAX = sys.float_info.max
EXAMPLES = 5
"""Unexpected values and rows kept per failed expectation."""


@dataclass(frozen=True)
class ProfileCheck:
    """The outcome of :func:`check_profile`.

    ``failures`` has one entry per failed expectation with the keys ``expectation`` (GX type),
    ``column``, ``description``, ``unexpected_count``, ``unexpected_values``, ``unexpected_rows``,
    ``observed_value`` and ``exception``. ``report`` is GX's ``describe_dict()``, made strict JSON, plus each
    expectation's description and a ``profile_check`` entry with the row count and the parameters.
    """

    success: bool
    failures: list[dict[str, Any]]
    report: dict[str, Any]

    def summary(self) -> str:
        """A few plain-English lines: the verdict, then one line per failed expectation."""
        info = self.report["profile_check"]
        statistics = self.report["statistics"]
        evaluated = statistics["evaluated_expectations"]
        if self.success:
            return f"Profile check passed: {evaluated} expectations hold on {info['rows']} rows."
        lines = [
            f"Profile check FAILED: {len(self.failures)} of {evaluated} expectations fail on "
            f"{info['rows']} rows."
        ]
        lines += [f"- {_failure_line(failure)}" for failure in self.failures]
        return "\n".join(lines)


def latency_vs_smaller_batches(df: pd.DataFrame, absolute_tolerance_s: float = 0.0) -> pd.Series:
    """p50 latency of each row plus ``absolute_tolerance_s`` over the largest p50 of the rows before it in
    batch order, per group.

    With no absolute tolerance, 0.8 means the batch is 20 % faster than a smaller batch of the same
    (pipeline, stage, variant, cores). The absolute tolerance forgives a drop of that many seconds: a model
    that takes 30 µs at any batch size wobbles by more than 10 % between runs. Comparing with the running
    maximum, not just the previous batch size, catches a curve that sinks by a little at every step. NaN
    for the smallest batch of a group and for missing latencies (those are reported by the not-null
    expectation).
    """
    ordered = df.assign(
        _p50=pd.to_numeric(df["latency_p50_s"], errors="coerce"),
        _batch=pd.to_numeric(df["batch_size"], errors="coerce"),
    ).sort_values("_batch", kind="stable")
    previous_max = ordered.groupby(GROUP_COLUMNS, dropna=False, sort=False)["_p50"].transform(
        lambda s: s.fillna(-np.inf).cummax().shift(1)
    )
    previous_max = previous_max.where(previous_max > 0)
    return ((ordered["_p50"] + absolute_tolerance_s) / previous_max).reindex(df.index)


def throughput_vs_latency(df: pd.DataFrame) -> pd.Series:
    """``throughput_rps`` over the throughput the p50 latency implies, ``batch_size / latency_p50_s``."""
    throughput = pd.to_numeric(df["throughput_rps"], errors="coerce")
    p50 = pd.to_numeric(df["latency_p50_s"], errors="coerce")
    batch = pd.to_numeric(df["batch_size"], errors="coerce")
    ratio = throughput * p50 / batch.where(batch > 0)
    return ratio.replace([np.inf, -np.inf], np.nan)


def with_derived_columns(df: pd.DataFrame, absolute_tolerance_s: float = 0.0) -> pd.DataFrame:
    """A copy of ``df`` with the derived ratio columns (all NaN when an input column is missing).

    A missing column is reported once, by the column-set expectation, rather than again by every rule
    derived from it.
    """
    out = df.reset_index(drop=True)
    needs = {
        LATENCY_VS_SMALLER_BATCHES: (
            lambda frame: latency_vs_smaller_batches(frame, absolute_tolerance_s),
            [*GROUP_COLUMNS, "batch_size", "latency_p50_s"],
        ),
        THROUGHPUT_VS_LATENCY: (throughput_vs_latency, ["throughput_rps", "latency_p50_s", "batch_size"]),
    }
    for column, (derive, inputs) in needs.items():
        out[column] = derive(out) if set(inputs) <= set(out.columns) else np.nan
    return out


def profile_expectations(
    min_repetitions: int,
    monotone_tolerance: float,
    throughput_tolerance: float,
    monotone_slack_s: float = 0.0,
) -> list[Expectation]:
    """The suite, in the order it is reported. Expects the columns of :func:`with_derived_columns`."""
    gx = _import_gx()
    from great_expectations.expectations.row_conditions import Column

    e = gx.expectations
    latencies = ["latency_p50_s", "latency_p95_s", "latency_p99_s"]
    suite: list[Expectation] = [
        e.ExpectTableColumnsToMatchSet(
            column_set=list(PROFILE_COLUMNS),
            exact_match=False,
            description="every column of the profile format is present",
        ),
        e.ExpectTableRowCountToBeBetween(min_value=1, description="the table has rows"),
        e.ExpectCompoundColumnsToBeUnique(
            column_list=KEY_COLUMNS, description=f"one row per ({', '.join(KEY_COLUMNS)})"
        ),
    ]
    suite += [
        e.ExpectColumnValuesToNotBeNull(column=c, description=f"{c} has no missing values")
        for c in dict.fromkeys([*KEY_COLUMNS, *NUMERIC_COLUMNS, "source"])
    ]
    suite.append(
        e.ExpectColumnValuesToBeInSet(
            column="source", value_set=list(SOURCES), description=f"source is one of {', '.join(SOURCES)}"
        )
    )
    suite += [
        e.ExpectColumnValuesToBeBetween(column=c, min_value=1, description=f"{c} is at least 1")
        for c in ("batch_size", "cores")
    ]
    suite += [
        e.ExpectColumnValuesToBeBetween(
            column=c,
            min_value=0,
            strict_min=True,
            max_value=FINITE_MAX,
            description=f"{c} is a positive finite number",
        )
        for c in [*latencies, "throughput_rps"]
    ]
    suite.append(
        e.ExpectColumnValuesToBeBetween(
            column="memory_mb",
            min_value=0,
            max_value=FINITE_MAX,
            description="memory_mb is a finite number, not negative",
        )
    )
    suite += [
        e.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A=high,
            column_B=low,
            or_equal=True,
            # A missing latency is the not-null expectation's to report.
            ignore_row_if="either_value_is_missing",
            description=f"{low} <= {high}",
        )
        for low, high in itertools.pairwise(latencies)
    ]
    suite += [
        e.ExpectColumnValuesToBeBetween(
            column=LATENCY_VS_SMALLER_BATCHES,
            min_value=1.0 - monotone_tolerance,
            description=f"p50 latency does not fall by more than {monotone_tolerance:.0%} "
            f"+ {monotone_slack_s * 1e3:g} ms as the batch grows (per pipeline, stage, variant, cores)",
        ),
        e.ExpectColumnValuesToBeBetween(
            column=THROUGHPUT_VS_LATENCY,
            min_value=1.0 - throughput_tolerance,
            max_value=1.0 + throughput_tolerance,
            description=f"throughput_rps is within {throughput_tolerance:.0%} of batch_size / latency_p50_s",
        ),
        e.ExpectColumnValuesToBeBetween(
            column="accuracy", min_value=0, max_value=1, description="accuracy is in [0, 1] where known"
        ),
        e.ExpectColumnValuesToBeBetween(
            column="repetitions",
            min_value=min_repetitions,
            row_condition=Column("source") == "measured",
            description=f"measured rows rest on at least {min_repetitions} timed repetitions",
        ),
    ]
    return suite


def check_profile(
    df: pd.DataFrame,
    *,
    min_repetitions: int = 20,
    monotone_tolerance: float = 0.10,
    monotone_slack_s: float = 1e-4,
    throughput_tolerance: float = 0.25,
) -> ProfileCheck:
    """Validate one profile table with the GX suite; never raises for bad data, only reports it.

    ``monotone_tolerance`` (relative) and ``monotone_slack_s`` (absolute, 0.1 ms by default) bound how much
    faster a batch may look than a smaller one before the table is rejected.
    """
    gx = _import_gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    data = with_derived_columns(df, monotone_slack_s)
    context = gx.get_context(mode="ephemeral")
    # Progress bars print "Calculating Metrics" to stderr for every expectation, which buries task logs.
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_definition = (
        context.data_sources.add_pandas("profiles")
        .add_dataframe_asset("profile")
        .add_batch_definition_whole_dataframe("whole table")
    )
    # One suite built whole: add_expectation re-serialises the stored suite on every call.
    suite = context.suites.add(
        gx.ExpectationSuite(
            name="ipa_profile",
            expectations=profile_expectations(
                min_repetitions, monotone_tolerance, throughput_tolerance, monotone_slack_s
            ),
        )
    )
    validation = context.validation_definitions.add(
        gx.ValidationDefinition(name="ipa_profile", data=batch_definition, suite=suite)
    )
    result = validation.run(
        batch_parameters={"dataframe": data},
        result_format={
            "result_format": "SUMMARY",
            "unexpected_index_column_names": [c for c in KEY_COLUMNS if c in data.columns],
            "partial_unexpected_count": EXAMPLES,
        },
    )
    report = json_safe(result.describe_dict())
    for entry, outcome in zip(report["expectations"], result.results, strict=True):
        entry["description"] = outcome.expectation_config.description
    report["profile_check"] = {
        "rows": len(df),
        "min_repetitions": min_repetitions,
        "monotone_tolerance": monotone_tolerance,
        "monotone_slack_s": monotone_slack_s,
        "throughput_tolerance": throughput_tolerance,
    }
    failures = [
        _failure(entry, _exception_message(outcome.exception_info))
        for entry, outcome in zip(report["expectations"], result.results, strict=True)
        if not entry["success"]
    ]
    return ProfileCheck(success=bool(result.success), failures=failures, report=report)


def json_safe(value: Any) -> Any:
    """``value`` with numpy scalars as Python ones and non-finite floats as strings ("inf", "nan").

    GX's JSON conversion turns NaN into null but leaves infinities, which ``json.dumps(allow_nan=False)``
    and most JSON readers other than Python's refuse (an infinite latency is just what a broken profile may
    hold), and it leaves numpy integers in the example rows, which ``json.dumps`` refuses outright.
    """
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _import_gx() -> ModuleType:
    """Great Expectations, imported on first use (it takes seconds) with its analytics switched off."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations

    return great_expectations


def _failure(entry: dict[str, Any], exception: str | None) -> dict[str, Any]:
    kwargs, result = entry["kwargs"], entry["result"]
    columns = [kwargs[k] for k in ("column", "column_A", "column_B") if k in kwargs]
    columns += kwargs.get("column_list", [])
    return {
        "expectation": entry["expectation_type"],
        "column": ", ".join(columns) or None,
        "description": entry["description"],
        "unexpected_count": result.get("unexpected_count"),
        "unexpected_values": result.get("partial_unexpected_list", [])[:EXAMPLES],
        "unexpected_rows": result.get("partial_unexpected_index_list", [])[:EXAMPLES],
        "observed_value": result.get("observed_value"),
        "exception": exception,
    }


def _exception_message(info: dict[str, Any]) -> str | None:
    """The first exception message in a GX ``exception_info``.

    GX gives either one flat record or, when a metric could not be computed (a missing column), one record
    per metric.
    """
    records = [info] if "raised_exception" in info else list(info.values())
    messages = [
        r.get("exception_message") for r in records if isinstance(r, dict) and r.get("raised_exception")
    ]
    return messages[0] if messages else None


def _failure_line(failure: dict[str, Any]) -> str:
    what = failure["description"] or f"{failure['expectation']} on {failure['column']}"
    if failure["exception"]:
        return f"{what}: could not be checked ({failure['exception']})"
    if failure["unexpected_count"] is not None:
        example = failure["unexpected_rows"][:1] or failure["unexpected_values"][:1]
        detail = f", e.g. {example[0]}" if example else ""
        return f"{what}: {failure['unexpected_count']} row(s) fail{detail}"
    return f"{what}: observed {failure['observed_value']}"
