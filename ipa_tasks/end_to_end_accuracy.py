"""Mission task T1: the measured end-to-end accuracy of every configuration of a demo pipeline, next to the
product of its stages' accuracies.

A configuration picks one variant per stage. Its end-to-end accuracy is measured by the demo pipeline itself
(:meth:`~ipa_tasks.demo_pipelines.DemoPipeline.end_to_end_accuracy`), each stage fed what the previous one
really produced, on held-out inputs. The product is what IPA's objective assumes; the gap between the two is
the error correlation between stages (see ``docs/accuracy.md``).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pandas as pd

from ipa_tasks.accuracy import MeasuredAccuracyTable
from ipa_tasks.demo_pipelines import Log
from ipa_tasks.profiles import variant_accuracy
from ipa_tasks.spec import PipelineSpec
from ipa_tasks.variant_cache import DEMO_PIPELINE_MODULES, cached_build, demo_pipeline

MEASURED_FILE = "end_to_end_accuracy.csv"
"""Written next to the published profile: the measured table, one row per configuration."""


def measure_pipeline_accuracy(
    spec: PipelineSpec, profile: pd.DataFrame, cache: Path, log: Log
) -> tuple[MeasuredAccuracyTable, pd.DataFrame] | None:
    """Measure every configuration of the variants that are in ``profile`` and built in ``cache``.

    Returns the measured table and its gap to the product of the profile's stage accuracies
    (:meth:`~ipa_tasks.accuracy.MeasuredAccuracyTable.correlation_gap`), or None for a pipeline that is not a
    demo pipeline or has a stage with no built, profiled variant.
    """
    if spec.name not in DEMO_PIPELINE_MODULES:
        return None
    pipeline = demo_pipeline(spec.name)
    accuracies = variant_accuracy(profile)
    directories: dict[tuple[str, str], Path] = {}
    per_stage: list[list[str]] = []
    for stage in spec.stages:
        names = []
        for variant in stage.variants:
            built = cached_build(cache, pipeline, stage.name, variant.name)
            if built is not None and (stage.name, variant.name) in accuracies:
                directories[(stage.name, variant.name)] = built.directory
                names.append(variant.name)
        if not names:
            log(f"{spec.name}: stage {stage.name} has no built and profiled variant; end-to-end not measured")
            return None
        per_stage.append(names)
    configurations = list(itertools.product(*per_stage))
    log(f"{spec.name}: measuring end-to-end accuracy of {len(configurations)} configurations")
    table = pipeline.end_to_end_accuracy(configurations, directories, log)
    stage_accuracies = [
        {name: accuracies[(stage.name, name)] for name in names}
        for stage, names in zip(spec.stages, per_stage, strict=True)
    ]
    return table, table.correlation_gap(stage_accuracies)
