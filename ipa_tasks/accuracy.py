"""Pipeline accuracy: how the accuracies of the stages' chosen variants combine (see ``docs/accuracy.md``).

- :func:`product_accuracy` is IPA's Pipeline Accuracy Score (PAS): the product of stage accuracies. It is
  the end-to-end accuracy *if stage errors were independent*.
- :func:`normalized_sum_accuracy` is IPA's original objective: each stage's variants rank-normalised to
  ``rank / (n - 1)`` and summed over stages; it keeps the order of variants and discards the gaps.
- :class:`MeasuredAccuracyTable` holds the end-to-end accuracy measured on held-out inputs for whole
  configurations (filled by the profiling DAG); its gap to the product is the error correlation between
  stages.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd

from ipa_tasks.spec import AccuracyMethod, PipelineSpec

Configuration = tuple[str, ...]
"""One variant name per stage, in pipeline order."""


def product_accuracy(stage_accuracies: Sequence[float]) -> float:
    """PAS: the product of the stages' accuracies (each in [0, 1])."""
    return math.prod(stage_accuracies)


def sum_accuracy(stage_accuracies: Sequence[float]) -> float:
    return float(sum(stage_accuracies))


def rank_normalized(accuracies: Mapping[str, float]) -> dict[str, float]:
    """IPA's normalisation of one stage: ``rank / (n - 1)`` by accuracy; a single variant scores 1.

    Equal accuracies share the lower rank, so the result does not depend on the variants' order.
    """
    if len(accuracies) == 1:
        return dict.fromkeys(accuracies, 1.0)
    ordered = sorted(accuracies.values())
    return {name: ordered.index(value) / (len(ordered) - 1) for name, value in accuracies.items()}


def normalized_sum_accuracy(
    configuration: Configuration, stage_variant_accuracies: Sequence[Mapping[str, float]]
) -> float:
    """IPA's first objective: sum over stages of the rank-normalised accuracy of the chosen variant."""
    return sum(
        rank_normalized(accuracies)[variant]
        for variant, accuracies in zip(configuration, stage_variant_accuracies, strict=True)
    )


def objective_accuracies(spec: PipelineSpec, accuracies: Mapping[tuple[str, str], float]) -> dict:
    """Per (stage, variant) the value the optimizer's accuracy term uses under the spec's method."""
    if spec.accuracy_method != "normalized_sum":
        return dict(accuracies)
    result: dict[tuple[str, str], float] = {}
    for stage in spec.stages:
        per_stage = {v.name: accuracies[(stage.name, v.name)] for v in stage.variants}
        for name, value in rank_normalized(per_stage).items():
            result[(stage.name, name)] = value
    return result


def combined_score(scores: Sequence[float], method: AccuracyMethod) -> float:
    """The optimizer's accuracy term from the chosen options' scores (see :func:`objective_accuracies`):
    their product for ``product``; their sum otherwise (the scores are already rank-normalised for
    ``normalized_sum``)."""
    return product_accuracy(scores) if method == "product" else sum_accuracy(scores)


def pipeline_accuracy(
    method: AccuracyMethod,
    configuration: Configuration,
    stage_variant_accuracies: Sequence[Mapping[str, float]],
) -> float:
    """The pipeline accuracy of one configuration under ``method``."""
    chosen = [acc[v] for v, acc in zip(configuration, stage_variant_accuracies, strict=True)]
    if method == "product":
        return product_accuracy(chosen)
    if method == "sum":
        return sum_accuracy(chosen)
    return normalized_sum_accuracy(configuration, stage_variant_accuracies)


@dataclass
class MeasuredAccuracyTable:
    """End-to-end accuracy measured on held-out inputs, per configuration of a pipeline.

    ``rows`` maps a configuration (one variant per stage) to its measured end-to-end accuracy.
    """

    pipeline: str
    stages: tuple[str, ...]
    rows: dict[Configuration, float] = field(default_factory=dict)

    def record(self, configuration: Configuration, accuracy: float) -> None:
        if len(configuration) != len(self.stages):
            raise ValueError(f"a configuration names {len(self.stages)} variants, got {configuration}")
        if not 0.0 <= accuracy <= 1.0:
            raise ValueError(f"accuracy must be in [0, 1], got {accuracy}")
        self.rows[tuple(configuration)] = float(accuracy)

    def lookup(self, configuration: Configuration) -> float | None:
        return self.rows.get(tuple(configuration))

    def correlation_gap(self, stage_variant_accuracies: Sequence[Mapping[str, float]]) -> pd.DataFrame:
        """Measured end-to-end accuracy next to the product of stage accuracies, per configuration.

        ``gap = measured - product``: positive when stage errors overlap (the same hard inputs fail in
        both stages), negative when an early error also spoils later stages more than independence says.
        """
        records = []
        for configuration, measured in sorted(self.rows.items()):
            product = pipeline_accuracy("product", configuration, stage_variant_accuracies)
            records.append(
                {
                    **dict(zip(self.stages, configuration, strict=True)),
                    "measured": measured,
                    "product": product,
                    "gap": measured - product,
                }
            )
        return pd.DataFrame(records)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            [{**dict(zip(self.stages, c, strict=True)), "accuracy": a} for c, a in sorted(self.rows.items())]
        )

    @classmethod
    def from_frame(cls, pipeline: str, stages: Sequence[str], frame: pd.DataFrame) -> MeasuredAccuracyTable:
        table = cls(pipeline=pipeline, stages=tuple(stages))
        for _, row in frame.iterrows():
            table.record(tuple(str(row[s]) for s in stages), float(row["accuracy"]))
        return table
