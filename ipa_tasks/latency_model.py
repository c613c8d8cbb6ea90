"""Latency as a function of batch size, fitted per (stage, variant, cores).

``latency(b) = c0 + c1*b + c2*b**2`` with non-negative coefficients (non-negative least squares), so a
fitted curve never predicts a negative latency nor one that falls as the batch grows. With two measured
batch sizes the fit is linear, with one it is not possible. Unmeasured batch sizes are filled only inside
the measured range: extrapolating a batch curve is what IPA's regression mode did and what we avoid.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import nnls

from ipa_tasks.profiles import LATENCY_COLUMNS, coerce_profile


@dataclass(frozen=True)
class LatencyFit:
    """One fitted curve for one latency column of one (stage, variant, cores)."""

    coefficients: tuple[float, float, float]
    r2: float
    max_relative_error: float
    n_points: int
    batch_min: int
    batch_max: int

    def predict(self, batch_size: np.ndarray | float) -> np.ndarray:
        b = np.asarray(batch_size, dtype=float)
        c0, c1, c2 = self.coefficients
        return c0 + c1 * b + c2 * b * b


def fit_latency(batch_sizes: np.ndarray, latencies: np.ndarray) -> LatencyFit:
    """Fit one quadratic (linear for two points). Raises ValueError for fewer than two batch sizes."""
    b = np.asarray(batch_sizes, dtype=float)
    y = np.asarray(latencies, dtype=float)
    if len(np.unique(b)) < 2:
        raise ValueError("a latency curve needs at least two distinct batch sizes")
    degree = 2 if len(np.unique(b)) >= 3 else 1
    design = np.column_stack([b**k for k in range(degree + 1)])
    coefficients, _ = nnls(design, y)
    full = (*coefficients, *([0.0] * (3 - len(coefficients))))
    fitted = design @ coefficients
    residual = float(np.sum((y - fitted) ** 2))
    total = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - residual / total if total > 0 else 1.0
    max_rel = float(np.max(np.abs(fitted - y) / np.maximum(y, 1e-12)))
    return LatencyFit(
        coefficients=(float(full[0]), float(full[1]), float(full[2])),
        r2=r2,
        max_relative_error=max_rel,
        n_points=len(b),
        batch_min=int(b.min()),
        batch_max=int(b.max()),
    )


GROUP_COLUMNS = ["pipeline", "stage", "variant", "cores"]


def _fittable_groups(profile: pd.DataFrame) -> Iterator[tuple[tuple, pd.DataFrame]]:
    """(key, rows sorted by batch size) of every group of non-fitted rows with two or more batch sizes."""
    base = profile[profile["source"] != "fitted"]
    for key, group in base.groupby(GROUP_COLUMNS, sort=True):
        if group["batch_size"].nunique() >= 2:
            yield key, group.sort_values("batch_size")


def _quantile_fits(group: pd.DataFrame) -> dict[str, LatencyFit]:
    return {
        q: fit_latency(group["batch_size"].to_numpy(), group[col].to_numpy())
        for q, col in LATENCY_COLUMNS.items()
    }


def fit_profile(profile: pd.DataFrame) -> pd.DataFrame:
    """Fit every (stage, variant, cores) group of the measured rows; one row per group and quantile."""
    rows = []
    for (pipeline, stage, variant, cores), group in _fittable_groups(profile):
        for quantile, fit in _quantile_fits(group).items():
            rows.append(
                {
                    "pipeline": pipeline,
                    "stage": stage,
                    "variant": variant,
                    "cores": int(cores),
                    "quantile": quantile,
                    "c0": fit.coefficients[0],
                    "c1": fit.coefficients[1],
                    "c2": fit.coefficients[2],
                    "r2": fit.r2,
                    "max_relative_error": fit.max_relative_error,
                    "n_points": fit.n_points,
                    "batch_min": fit.batch_min,
                    "batch_max": fit.batch_max,
                }
            )
    return pd.DataFrame(rows)


def complete_profile(profile: pd.DataFrame, batch_sizes: dict[str, list[int]]) -> pd.DataFrame:
    """Add ``source="fitted"`` rows for the wanted batch sizes of each stage that were not measured.

    ``batch_sizes`` maps stage name to the spec's candidate batch sizes. Only batch sizes inside the
    measured range of a (variant, cores) group are filled. Throughput of a filled row is ``b / p50``; memory
    is interpolated linearly between the neighbouring measurements.
    """
    new_rows = []
    for (_, stage, _, _), group in _fittable_groups(profile):
        measured = set(group["batch_size"].astype(int))
        lo, hi = min(measured), max(measured)
        wanted = [b for b in batch_sizes.get(stage, []) if lo <= b <= hi and b not in measured]
        if not wanted:
            continue
        fits = _quantile_fits(group)
        template = group.iloc[0]
        for b in wanted:
            latencies = {q: float(fit.predict(b)) for q, fit in fits.items()}
            # Quantiles fitted separately can cross; keep them ordered.
            p50 = latencies["p50"]
            p95 = max(latencies["p95"], p50)
            p99 = max(latencies["p99"], p95)
            memory = float(np.interp(b, group["batch_size"], group["memory_mb"]))
            new_rows.append(
                {
                    **template.to_dict(),
                    "batch_size": b,
                    "latency_p50_s": p50,
                    "latency_p95_s": p95,
                    "latency_p99_s": p99,
                    "throughput_rps": b / p50,
                    "memory_mb": memory,
                    "repetitions": 0,
                    "source": "fitted",
                }
            )
    if not new_rows:
        return coerce_profile(profile)
    return coerce_profile(pd.concat([profile, pd.DataFrame(new_rows)], ignore_index=True))
