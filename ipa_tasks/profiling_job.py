"""One profiling job: what to measure, how to run it, and where its rows go.

A :class:`ProfilingJob` travels between Airflow tasks as a plain dict (:meth:`ProfilingJob.to_dict`), so
every step of a round can run in its own process or pod. The job itself is the command
``python -m profiling_jobs.profile_variant`` with :func:`job_arguments`: run here by :func:`run_locally`,
or in a pod by :class:`~ipa_tasks.profiling_pod.ProfilingPodOperator`. It writes its rows to
``<IPA_HOME>/rounds/<round id>/<stage>.<variant>.parquet`` (:func:`round_directory`); a pod sees the same
folder through the volume mounted at ``IPA_HOME``.

This module stays free of pandas and the solvers: DAG files import it when they are parsed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PROFILING_MODULE = "profiling_jobs.profile_variant"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class ProfilingJob:
    """Everything one profiling job needs: what to measure, how, and where to write the rows."""

    pipeline: str
    spec: str
    """Spec file path or shipped name, as the job's ``--spec`` argument."""
    stage: str
    variant: str
    batch_sizes: tuple[int, ...]
    cores: tuple[int, ...]
    repetitions: int
    warmup: int
    out: str
    round_id: str = ""
    """The round the job belongs to (the Airflow run id), and the round's MLflow parent run."""
    parent_run_id: str = ""

    @property
    def label(self) -> str:
        return f"{self.stage}/{self.variant}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "batch_sizes": list(self.batch_sizes), "cores": list(self.cores)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProfilingJob:
        return cls(**{**data, "batch_sizes": tuple(data["batch_sizes"]), "cores": tuple(data["cores"])})


def round_directory(home: Path, round_id: str) -> Path:
    """Where a round's jobs write their tables; the round id made safe as one folder name."""
    return home / "rounds" / _UNSAFE.sub("_", round_id)


def job_arguments(job: ProfilingJob) -> list[str]:
    """The profiling job's command-line arguments (after ``python -m profiling_jobs.profile_variant``)."""
    return [
        "--spec", job.spec,
        "--stage", job.stage,
        "--variant", job.variant,
        "--batch-sizes", ",".join(map(str, job.batch_sizes)),
        "--cores", ",".join(map(str, job.cores)),
        "--repetitions", str(job.repetitions),
        "--warmup", str(job.warmup),
        "--out", job.out,
    ]  # fmt: skip


class JobFailed(RuntimeError):
    """The profiling job exited with an error; the message carries the end of its output."""


def run_locally(job: ProfilingJob, *, timeout_s: float | None = None) -> str:
    """Run the job as a child process of this one; return its progress output (stderr)."""
    Path(job.out).parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", PROFILING_MODULE, *job_arguments(job)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-20:])
        raise JobFailed(f"profiling {job.label} exited with status {done.returncode}:\n{tail}")
    return done.stderr
