"""Random small optimizer instances (spec + profile) for property-based tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import strategies as st

from ipa_tasks.spec import PipelineSpec, parse_spec


def profile_rows(pipeline: str, stage: str, variant: str, base_s: float, batch_sizes, cores, growth: float):
    """Rows of a plausible profile: latency grows with batch, shrinks with cores (Amdahl)."""
    rows = []
    for c in cores:
        for b in batch_sizes:
            p50 = base_s * (1.0 + growth * (b - 1)) * (0.3 + 0.7 / c)
            rows.append(
                {
                    "pipeline": pipeline,
                    "stage": stage,
                    "variant": variant,
                    "batch_size": b,
                    "cores": c,
                    "latency_p50_s": p50,
                    "latency_p95_s": p50 * 1.1,
                    "latency_p99_s": p50 * 1.25,
                    "throughput_rps": b / p50,
                    "memory_mb": 100.0 + 10 * b,
                    "accuracy": np.nan,
                    "repetitions": 20,
                    "source": "measured",
                    "profiled_at": "2026-11-23T00:00:00Z",
                    "host": "test",
                }
            )
    return rows


@st.composite
def instances(draw, max_stages: int = 3, max_variants: int = 3, max_replicas: int = 6):
    """A (spec, profile, load, policy); small enough for brute force over unpruned options."""
    n_stages = draw(st.integers(1, max_stages))
    min_replicas = draw(st.sampled_from([1, 1, 2]))
    batch_sizes = draw(st.sampled_from([[1], [1, 2], [1, 4], [2, 4], [1, 2, 4]]))
    cores = draw(st.sampled_from([[1], [1, 2], [2, 4]]))
    method = draw(st.sampled_from(["product", "product", "sum", "normalized_sum"]))
    stages, rows = [], []
    for s in range(n_stages):
        n_variants = draw(st.integers(1, max_variants))
        variants = []
        for v in range(n_variants):
            accuracy = draw(st.floats(0.3, 1.0))
            base = draw(st.floats(0.01, 0.5))
            growth = draw(st.floats(0.3, 1.0))
            name = f"v{v}"
            variants.append(
                {"name": name, "model": {"kind": "reference", "uri": f"test/{name}"}, "accuracy": accuracy}
            )
            rows += profile_rows("rand", f"s{s}", name, base, batch_sizes, cores, growth)
        stages.append(
            {
                "name": f"s{s}",
                "variants": variants,
                "batch_sizes": batch_sizes,
                "cores": cores,
                "replicas": {"min": min_replicas, "max": max_replicas},
                "load_factor": draw(st.sampled_from([1.0, 1.0, 0.5, 2.5])),
            }
        )
    spec = parse_spec(
        {
            "name": "rand",
            "sla_s": draw(st.floats(0.2, 4.0)),
            "accuracy_method": method,
            "objective": {
                "accuracy_weight": draw(st.sampled_from([0.5, 2.0, 10.0, 100.0])),
                "cost_weight": draw(st.sampled_from([0.0, 0.1, 1.0])),
                "batch_weight": 1e-6,
                "change_penalty": draw(st.sampled_from([0.0, 0.5])),
            },
            "max_total_cores": draw(st.sampled_from([None, None, 6, 12])),
            "latency_quantile": draw(st.sampled_from(["p99", "p99", "p95", "p50"])),
            "stages": stages,
            "baselines": {
                "rim_replicas": {s["name"]: draw(st.integers(min_replicas, max_replicas)) for s in stages}
            },
        }
    )
    load = draw(st.floats(0.0, 60.0))
    policy = draw(st.sampled_from(["ipa", "ipa", "ipa", "fa2-low", "fa2-high", "rim"]))
    rows = pd.DataFrame(rows)
    if draw(st.booleans()) and len(batch_sizes) > 2:  # leave a batch size to the fitted latency model
        rows = rows[rows["batch_size"] != batch_sizes[1]]
    return spec, rows, load, policy


def two_stage_spec(**overrides) -> tuple[PipelineSpec, pd.DataFrame]:
    """A fixed, readable two-stage instance for example-based tests."""
    data = {
        "name": "toy",
        "sla_s": 2.0,
        "objective": {"accuracy_weight": 10.0, "cost_weight": 0.5},
        "stages": [
            {
                "name": "detect",
                "variants": [
                    {"name": "small", "model": {"kind": "reference", "uri": "t/small"}, "accuracy": 0.7},
                    {"name": "big", "model": {"kind": "reference", "uri": "t/big"}, "accuracy": 0.9},
                ],
                "batch_sizes": [1, 2, 4],
                "cores": [1, 2],
                "replicas": {"min": 1, "max": 20},
            },
            {
                "name": "classify",
                "variants": [
                    {"name": "s", "model": {"kind": "reference", "uri": "t/s"}, "accuracy": 0.8},
                    {"name": "l", "model": {"kind": "reference", "uri": "t/l"}, "accuracy": 0.95},
                ],
                "batch_sizes": [1, 2, 4],
                "cores": [1, 2],
                "replicas": {"min": 1, "max": 20},
            },
        ],
        "baselines": {"rim_replicas": {"detect": 3, "classify": 3}},
    }
    data.update(overrides)
    rows = []
    for stage, variants in (("detect", {"small": 0.05, "big": 0.2}), ("classify", {"s": 0.03, "l": 0.15})):
        for variant, base in variants.items():
            rows += profile_rows("toy", stage, variant, base, [1, 2, 4], [1, 2], 0.6)
    return parse_spec(data), pd.DataFrame(rows)
