"""A profiling job as data: it survives XCom, and its arguments are exactly what the job's CLI accepts."""

from __future__ import annotations

from pathlib import Path

from ipa_tasks.profiling_job import ProfilingJob, job_arguments, round_directory
from profiling_jobs.profile_variant import build_parser

JOB = ProfilingJob(
    pipeline="digits",
    spec="/specs/digits.yaml",
    stage="classify",
    variant="knn",
    batch_sizes=(1, 4, 16),
    cores=(1, 2),
    repetitions=25,
    warmup=3,
    out="/home/ipa/rounds/r1/classify.knn.parquet",
    round_id="manual__2026-11-23T10:00:00+00:00",
    parent_run_id="abc",
)


def test_a_job_survives_a_round_trip_through_a_plain_dict():
    data = JOB.to_dict()
    assert data["batch_sizes"] == [1, 4, 16] and isinstance(data["cores"], list)
    assert ProfilingJob.from_dict(data) == JOB
    assert JOB.label == "classify/knn"


def test_the_arguments_parse_back_to_the_job_with_the_jobs_own_parser():
    args = build_parser().parse_args(job_arguments(JOB))
    assert (args.spec, args.stage, args.variant) == (JOB.spec, JOB.stage, JOB.variant)
    assert args.batch_sizes == [1, 4, 16] and args.cores == [1, 2]
    assert (args.repetitions, args.warmup, args.out) == (25, 3, Path(JOB.out))


def test_round_directory_is_one_safe_folder_per_round(tmp_path: Path):
    folder = round_directory(tmp_path, "manual__2026-11-23T10:00:00+00:00")
    assert folder.parent == tmp_path / "rounds"
    assert folder.name == "manual__2026-11-23T10_00_00_00_00"
    assert round_directory(tmp_path, "../../etc").parent == tmp_path / "rounds"
