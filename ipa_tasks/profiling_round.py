"""One profiling round of a pipeline, as the ``ipa_profile`` DAG runs it, in plain functions.

A round is: plan one :class:`~ipa_tasks.profiling_job.ProfilingJob` per variant (:func:`plan_jobs`), run
each job (:mod:`ipa_tasks.profiling_job`), check each variant's table with the GX suite and quarantine the
ones that fail (:func:`check_variant_table`), then merge the good tables into the published profile
(:func:`merged_profile`, published by :mod:`ipa_tasks.profiling_publish`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from ipa_tasks.demo_pipelines import Log
from ipa_tasks.latency_model import complete_profile, fit_profile
from ipa_tasks.profile_checks import ProfileCheck, check_profile
from ipa_tasks.profile_store import ProfileStore
from ipa_tasks.profiles import ProfileError, coerce_profile, variant_accuracy
from ipa_tasks.profiling_job import ProfilingJob, round_directory
from ipa_tasks.settings import Settings
from ipa_tasks.spec import PipelineSpec, load_spec, resolve_spec_path
from ipa_tasks.tracking import log_quarantined_variant, log_variant_profile, start_profiling_round


class RoundError(ValueError):
    """A round was asked for something the spec does not allow; the message says what and where."""


def plan_jobs(
    spec: PipelineSpec,
    spec_ref: str,
    round_dir: Path,
    *,
    stages: Sequence[str] | None = None,
    variants: Sequence[str] | None = None,
    batch_sizes: Sequence[int] | None = None,
    cores: Sequence[int] | None = None,
    repetitions: int,
    warmup: int,
) -> list[ProfilingJob]:
    """One job per selected variant that can run here.

    Empty selections mean "all". Batch sizes and cores default to each stage's own lists. Variants that are
    not runnable (``reference`` models, which we do not have) are skipped when selected implicitly and an
    error when named.
    """
    if repetitions < 1 or warmup < 0:
        raise RoundError(f"repetitions must be >= 1 and warmup >= 0, got {repetitions} and {warmup}")
    for name, values in (("batch_sizes", batch_sizes), ("cores", cores)):
        if values and min(values) < 1:
            raise RoundError(f"{name} must all be >= 1, got {list(values)}")
    try:
        selected = spec.select_variants(stages, variants)
    except KeyError as exc:
        raise RoundError(str(exc.args[0])) from None
    jobs = []
    for stage_name, variant_name in selected:
        stage = spec.stage(stage_name)
        kind = stage.variant(variant_name).model.kind
        if kind != "python":
            if variants:
                raise RoundError(
                    f"{stage_name}/{variant_name} is a model of kind {kind!r}, which cannot be profiled here"
                )
            continue
        jobs.append(
            ProfilingJob(
                pipeline=spec.name,
                spec=spec_ref,
                stage=stage_name,
                variant=variant_name,
                batch_sizes=tuple(sorted(set(batch_sizes or stage.batch_sizes))),
                cores=tuple(sorted(set(cores or stage.cores))),
                repetitions=repetitions,
                warmup=warmup,
                out=str(round_dir / f"{stage_name}.{variant_name}.parquet"),
            )
        )
    if not jobs:
        raise RoundError(f"nothing to profile: no selected variant of {spec.name!r} is of kind 'python'")
    return jobs


@dataclass(frozen=True)
class VariantOutcome:
    """What became of one variant's table in a round."""

    stage: str
    variant: str
    status: Literal["passed", "quarantined", "missing"]
    table: str
    """The job's table (``passed``), the quarantined copy, or the path that was expected (``missing``)."""
    message: str
    report: str | None = None
    """The GX report of a quarantined table."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def quarantine_id(round_id: str, job: ProfilingJob) -> str:
    return f"{round_id}.{job.stage}.{job.variant}"


def check_variant_table(
    job: ProfilingJob, store: ProfileStore, round_id: str, **check_options: Any
) -> tuple[VariantOutcome, pd.DataFrame | None, ProfileCheck | None]:
    """Check the job's table with the GX suite; quarantine it if it fails.

    Returns the outcome, the table (None if the job wrote none) and the check (None likewise). A table that
    holds rows of another variant fails like any other broken table: it is quarantined, never published.
    """
    path = Path(job.out)
    if not path.exists():
        missing = VariantOutcome(
            job.stage, job.variant, "missing", str(path), f"{job.label}: the job wrote no table"
        )
        return missing, None, None
    table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    check = check_profile(table, **check_options)
    foreign = table[(table.get("stage") != job.stage) | (table.get("variant") != job.variant)]
    if check.success and foreign.empty:
        return VariantOutcome(job.stage, job.variant, "passed", str(path), check.summary()), table, check
    if check.success:
        check = _with_failure(check, f"{len(foreign)} row(s) belong to another stage or variant")
    result = store.quarantine(job.pipeline, table, check, quarantine_id(round_id, job))
    outcome = VariantOutcome(
        job.stage, job.variant, "quarantined", str(result.table_path), result.message, str(result.report_path)
    )
    return outcome, table, check


def _with_failure(check: ProfileCheck, description: str) -> ProfileCheck:
    failure = {
        "expectation": "ipa_rows_belong_to_the_job",
        "column": None,
        "description": description,
        "unexpected_count": None,
        "unexpected_values": [],
        "unexpected_rows": [],
        "observed_value": None,
        "exception": None,
    }
    return ProfileCheck(success=False, failures=[*check.failures, failure], report=check.report)


def merged_profile(
    spec: PipelineSpec, current: pd.DataFrame | None, new_tables: Sequence[pd.DataFrame]
) -> pd.DataFrame:
    """The published profile after a round: the new measurements replace the current rows of the same
    (stage, variant); variants this round did not profile keep their rows. Batch sizes of the spec that were
    not measured are filled from the latency model, inside the measured range."""
    if not new_tables:
        raise ProfileError("no table passed its checks in this round; nothing to merge")
    new = coerce_profile(pd.concat(new_tables, ignore_index=True), f"round of {spec.name}")
    new = new[new["source"] != "fitted"]
    kept = []
    if current is not None:
        replaced = set(map(tuple, new[["stage", "variant"]].to_numpy()))
        keys = list(map(tuple, current[["stage", "variant"]].to_numpy()))
        # Fitted rows are refitted from the merged measurements, never carried over.
        not_replaced = pd.Series([key not in replaced for key in keys], index=current.index)
        kept = [current[not_replaced & (current["source"] != "fitted")]]
    measured = pd.concat([*kept, new], ignore_index=True)
    return complete_profile(measured, {s.name: list(s.batch_sizes) for s in spec.stages})


def open_round(
    settings: Settings, params: dict[str, Any], round_id: str, experiment: str, log: Log
) -> list[ProfilingJob]:
    """Plan every pipeline's jobs from the DAG's params, then open one MLflow parent run per pipeline.

    Every pipeline is planned before any run is opened, so bad params leave no half-open rounds behind.
    """
    if (params["stages"] or params["variants"]) and len(params["pipelines"]) != 1:
        raise RoundError("stages and variants can only be chosen for a single pipeline")
    planned = []
    for ref in params["pipelines"]:
        spec = load_spec(resolve_spec_path(ref))
        jobs = plan_jobs(
            spec,
            ref,
            round_directory(settings.home, round_id),
            stages=params["stages"],
            variants=params["variants"],
            batch_sizes=params["batch_sizes"],
            cores=params["cores"],
            repetitions=params["repetitions"],
            warmup=params["warmup"],
        )
        planned.append((spec.name, ref, jobs))
    opened = []
    for name, ref, jobs in planned:
        round_params = {**params, "pipelines": ref, "round_id": round_id, "variants_planned": len(jobs)}
        parent = start_profiling_round(settings.tracking_uri, experiment, name, round_params)
        log(f"{name}: {len(jobs)} variant(s) to profile: {', '.join(j.label for j in jobs)}")
        opened += [replace(job, round_id=round_id, parent_run_id=parent) for job in jobs]
    return opened


def check_and_log(settings: Settings, job: ProfilingJob, log: Log) -> VariantOutcome:
    """Check the job's table; log a passing one (with its latency fits) or a quarantined one as a child
    of the round's MLflow run."""
    outcome, table, check = check_variant_table(job, ProfileStore(settings.profile_store), job.round_id)
    log(outcome.message)
    if outcome.status == "passed":
        accuracy = variant_accuracy(table).get((job.stage, job.variant))
        log_variant_profile(
            settings.tracking_uri,
            job.parent_run_id,
            job.pipeline,
            job.stage,
            job.variant,
            table,
            fit_profile(table),
            accuracy,
        )
    elif outcome.status == "quarantined":
        log_quarantined_variant(
            settings.tracking_uri,
            job.parent_run_id,
            job.pipeline,
            job.stage,
            job.variant,
            check.summary(),
            check.report,
            table,
        )
    return outcome
