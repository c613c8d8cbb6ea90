"""Batch service times from a profile: the median interpolated between measured batch sizes, a log-normal
spread whose 99th percentile is the profile's p99."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ipa_tasks.simulation.service_times import ServiceTimes


def test_service_times_follow_the_profile_median_and_p99():
    profile = pd.DataFrame(
        {
            "pipeline": "p",
            "stage": "s",
            "variant": "v",
            "batch_size": [1, 4],
            "cores": 1,
            "latency_p50_s": [0.010, 0.020],
            "latency_p95_s": [0.015, 0.030],
            "latency_p99_s": [0.020, 0.040],
            "throughput_rps": [100.0, 200.0],
            "memory_mb": 10.0,
            "accuracy": 0.9,
            "repetitions": 30,
            "source": "synthetic",
            "profiled_at": "2026-12-01T00:00:00+00:00",
            "host": "test",
        }
    )
    times = ServiceTimes(profile).curve("s", "v", 1)
    assert times.time(1, 0.0) == pytest.approx(0.010)
    assert times.time(2, 0.0) == pytest.approx(0.010 + 0.010 / 3)  # between batch 1 and 4
    draws = np.random.default_rng(0).standard_normal(200_000)
    samples = np.array([times.time(1, z) for z in draws[:50_000]])
    assert np.percentile(samples, 99) == pytest.approx(0.020, rel=0.03)
    with pytest.raises(KeyError, match="no rows for stage 's', variant 'w'"):
        ServiceTimes(profile).curve("s", "w", 1)
