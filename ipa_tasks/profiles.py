"""The profile table: one row per (stage, variant, batch size, cores) measurement of one replica.

Columns (all latencies in seconds, for a whole batch on one replica):

=================  =======  ==========================================================================
column             dtype    meaning
=================  =======  ==========================================================================
pipeline           str      pipeline name (the spec's ``name``)
stage              str      stage name
variant            str      model variant name
batch_size         int      requests per batch
cores              int      CPU cores (intra-op threads) of the replica
latency_p50_s      float    median latency of one batch
latency_p95_s      float    95th percentile latency of one batch
latency_p99_s      float    99th percentile latency of one batch
throughput_rps     float    requests per second one replica sustains at this batch size (batch / p50)
memory_mb          float    peak resident memory of the replica (MiB)
accuracy           float    the variant's accuracy on held-out data, in [0, 1] (NaN if unknown)
repetitions        int      timed batches behind the percentiles (0 for fitted or synthetic rows)
source             str      ``measured`` | ``fitted`` (filled by the latency model) | ``synthetic``
profiled_at        str      ISO-8601 UTC time of the measurement
host               str      machine the row was measured on (or ``synthetic``)
=================  =======  ==========================================================================
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

PROFILE_COLUMNS: dict[str, str] = {
    "pipeline": "str",
    "stage": "str",
    "variant": "str",
    "batch_size": "int64",
    "cores": "int64",
    "latency_p50_s": "float64",
    "latency_p95_s": "float64",
    "latency_p99_s": "float64",
    "throughput_rps": "float64",
    "memory_mb": "float64",
    "accuracy": "float64",
    "repetitions": "int64",
    "source": "str",
    "profiled_at": "str",
    "host": "str",
}
KEY_COLUMNS = ["pipeline", "stage", "variant", "batch_size", "cores"]
LATENCY_COLUMNS = {"p50": "latency_p50_s", "p95": "latency_p95_s", "p99": "latency_p99_s"}
SOURCES = ("measured", "fitted", "synthetic")


class ProfileError(ValueError):
    """A profile table cannot be used. The message names the file and the column or rows."""


def coerce_profile(df: pd.DataFrame, source: str | Path = "<profile>") -> pd.DataFrame:
    """Check the columns and their types, sort by key; raise :class:`ProfileError` naming what is wrong."""
    missing = [c for c in PROFILE_COLUMNS if c not in df.columns]
    if missing:
        raise ProfileError(f"{source}: missing column(s) {', '.join(missing)}")
    df = df[list(PROFILE_COLUMNS)].copy()
    for column, dtype in PROFILE_COLUMNS.items():
        try:
            if dtype == "str":
                df[column] = df[column].astype("str")
            elif dtype == "int64":
                if df[column].isna().any():
                    raise ValueError("empty values")
                df[column] = df[column].astype("int64")
            else:
                df[column] = pd.to_numeric(df[column], errors="raise").astype("float64")
        except (ValueError, TypeError) as exc:
            raise ProfileError(f"{source}: column {column!r} is not {dtype}: {exc}") from None
    bad_source = sorted(set(df["source"]) - set(SOURCES))
    if bad_source:
        raise ProfileError(f"{source}: column 'source' has unknown value(s) {bad_source}; allowed {SOURCES}")
    for column in (*LATENCY_COLUMNS.values(), "throughput_rps"):
        bad = ~(df[column] > 0) | ~np.isfinite(df[column])
        if bad.any():
            first = df.loc[bad, [*KEY_COLUMNS, column]].iloc[0].to_dict()
            raise ProfileError(
                f"{source}: column {column!r} must be a positive finite number; "
                f"{int(bad.sum())} row(s) are not, e.g. {first}"
            )
    accuracy = df["accuracy"]
    out_of_range = accuracy.notna() & ~accuracy.between(0.0, 1.0)
    if out_of_range.any():
        first = df.loc[out_of_range, [*KEY_COLUMNS, "accuracy"]].iloc[0].to_dict()
        raise ProfileError(f"{source}: column 'accuracy' must be in [0, 1] or empty, e.g. {first}")
    duplicated = df.duplicated(KEY_COLUMNS, keep=False)
    if duplicated.any():
        first = df.loc[duplicated, KEY_COLUMNS].iloc[0].to_dict()
        raise ProfileError(f"{source}: {int(duplicated.sum())} rows share a key, e.g. {first}")
    return df.sort_values(KEY_COLUMNS, kind="stable").reset_index(drop=True)


def read_profile(path: str | Path) -> pd.DataFrame:
    """Read a profile table from ``.csv`` or ``.parquet``."""
    path = Path(path)
    try:
        if path.suffix == ".parquet":
            df = pd.read_parquet(path)
        elif path.suffix == ".csv":
            df = pd.read_csv(path)
        else:
            raise ProfileError(f"{path}: unknown profile format {path.suffix!r} (use .csv or .parquet)")
    except (OSError, ValueError) as exc:
        if isinstance(exc, ProfileError):
            raise
        raise ProfileError(f"{path}: cannot read: {exc}") from None
    return coerce_profile(df, path)


def write_profile(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a profile table as ``.csv`` or ``.parquet`` (chosen by the suffix)."""
    path = Path(path)
    df = coerce_profile(df, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        df.to_parquet(path, index=False)
    elif path.suffix == ".csv":
        df.to_csv(path, index=False, float_format="%.6g")
    else:
        raise ProfileError(f"{path}: unknown profile format {path.suffix!r} (use .csv or .parquet)")
    return path


def profile_for_pipeline(df: pd.DataFrame, pipeline: str) -> pd.DataFrame:
    rows = df[df["pipeline"] == pipeline]
    if rows.empty:
        known = ", ".join(sorted(set(df["pipeline"])))
        raise ProfileError(f"the profile table has no rows for pipeline {pipeline!r} (it has: {known})")
    return rows.reset_index(drop=True)


def variant_accuracy(df: pd.DataFrame) -> dict[tuple[str, str], float]:
    """Accuracy per (stage, variant) as recorded in the profile (NaN rows ignored)."""
    known = df.dropna(subset=["accuracy"])
    grouped = known.groupby(["stage", "variant"], sort=True)["accuracy"].mean()
    return {key: float(value) for key, value in grouped.items() if np.isfinite(value)}
