"""How long a replica takes to serve a batch, as the profile says: the simulator's model of a stage server.

What: for each (stage, variant, cores) of a profile, the median (p50) batch latency at every measured batch
size, interpolated linearly for the batch sizes in between (a batch that is not full), and a log-normal
spread around it whose 99th percentile is the profile's p99: ``p50 * exp(sigma * z)`` with
``sigma = ln(p99 / p50) / z99``. A batch smaller than the smallest measured one costs that one's latency.

Why log-normal: latency is positive and right-skewed; two measured quantiles fix it, and p50/p99 are what
every profile row has. Deterministic for a seeded generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ipa_tasks.profiles import coerce_profile

Z99 = 2.3263478740408408  # the standard normal's 99th percentile


@dataclass(frozen=True)
class BatchCurve:
    """One (stage, variant, cores): ``median[n]`` and ``sigma[n]`` for a batch of ``n`` items, n >= 1 (index
    0 unused), up to the largest measured batch size. Plain lists: the simulator reads them per batch."""

    median: list[float]
    sigma: list[float]

    def time(self, items: int, z: float) -> float:
        """The service time of a batch of ``items`` at the standard normal draw ``z``."""
        n = min(items, len(self.median) - 1)
        return self.median[n] * math.exp(self.sigma[n] * z)


class ServiceTimes:
    """Batch service times of every (stage, variant, cores) in a profile."""

    def __init__(self, profile: pd.DataFrame) -> None:
        table = coerce_profile(profile)
        self.curves: dict[tuple[str, str, int], BatchCurve] = {}
        for (stage, variant, cores), rows in table.groupby(["stage", "variant", "cores"]):
            rows = rows.sort_values("batch_size")
            sizes = rows["batch_size"].to_numpy(float)
            p50 = rows["latency_p50_s"].to_numpy(float)
            p99 = np.maximum(rows["latency_p99_s"].to_numpy(float), p50)
            n = np.arange(int(sizes.max()) + 1, dtype=float)
            self.curves[(str(stage), str(variant), int(cores))] = BatchCurve(
                median=np.interp(n, sizes, p50).tolist(),
                sigma=np.interp(n, sizes, np.log(p99 / p50) / Z99).tolist(),
            )

    def curve(self, stage: str, variant: str, cores: int) -> BatchCurve:
        try:
            return self.curves[(stage, variant, cores)]
        except KeyError:
            raise KeyError(
                f"the profile has no rows for stage {stage!r}, variant {variant!r}, {cores} core(s)"
            ) from None
