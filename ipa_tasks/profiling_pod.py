"""The profiling job as a Kubernetes pod: the same entry point, run by ``KubernetesPodOperator``.

:class:`ProfilingPodOperator` turns one :class:`~ipa_tasks.profiling_round.ProfilingJob` (a dict, as mapped
tasks pass it) into a pod that runs ``python -m profiling_jobs.profile_variant`` with the job's arguments,
requests and limits exactly the CPUs of the job's largest core count (so thread pinning measures what a
replica of that size gets), and sees ``IPA_HOME`` where the Airflow workers see it: the variant cache it
loads from and the round folder it writes to. On a cluster that folder is a PersistentVolumeClaim named by
``IPA_HOME_PVC`` mounted at the same path; without it the pod uses its own filesystem (the image's).

Its labels are the ones the Helm chart's Role lets Airflow manage: ``app.kubernetes.io/part-of=ipa`` and
``ipa/role=profiling``.
"""

from __future__ import annotations

import os
import re
from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from kubernetes.client import models as k8s

from ipa_tasks.profiling_job import PROFILING_MODULE, ProfilingJob, job_arguments
from ipa_tasks.settings import HOME_VARIABLE, current_settings

PVC_VARIABLE = "IPA_HOME_PVC"
POD_LABELS = {"app.kubernetes.io/part-of": "ipa", "ipa/role": "profiling"}
DEFAULT_MEMORY = "2Gi"
_NOT_DNS = re.compile(r"[^a-z0-9-]+")


def pod_name(job: ProfilingJob) -> str:
    """``profile-<pipeline>-<variant>``, lower-case DNS-safe; the operator appends a random suffix."""
    name = _NOT_DNS.sub("-", f"profile-{job.pipeline}-{job.variant}".lower()).strip("-")
    return name[:50].rstrip("-")


def pod_resources(job: ProfilingJob, memory: str = DEFAULT_MEMORY) -> k8s.V1ResourceRequirements:
    """Requests equal to limits: a profiled replica must neither borrow idle CPUs nor be throttled below
    the cores it is measured with."""
    amounts = {"cpu": str(max(job.cores)), "memory": memory}
    return k8s.V1ResourceRequirements(requests=dict(amounts), limits=dict(amounts))


def pod_storage(home: str, claim: str | None) -> tuple[list[k8s.V1Volume], list[k8s.V1VolumeMount]]:
    if not claim:
        return [], []
    volume = k8s.V1Volume(
        name="ipa-home", persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(claim_name=claim)
    )
    return [volume], [k8s.V1VolumeMount(name="ipa-home", mount_path=home)]


class NoSharedHome(RuntimeError):
    """Pods would write their tables where the Airflow workers cannot read them."""


def require_shared_home() -> str:
    """The claim pods mount as ``IPA_HOME``; an error that says what to set when there is none."""
    claim = os.environ.get(PVC_VARIABLE)
    if not claim:
        raise NoSharedHome(
            f"profiling in pods needs a volume shared with the Airflow workers: set {PVC_VARIABLE} to the "
            f"PersistentVolumeClaim mounted at IPA_HOME ({current_settings().home}) on the workers, or run "
            "the round with runner=local"
        )
    return claim


class ProfilingPodOperator(KubernetesPodOperator):
    """``KubernetesPodOperator`` for one profiling job: ``.partial(...).expand(job=jobs)``."""

    def __init__(self, *, job: dict[str, Any], memory: str = DEFAULT_MEMORY, **kwargs: Any) -> None:
        profiling_job = ProfilingJob.from_dict(job)
        home = str(current_settings().home)
        volumes, mounts = pod_storage(home, os.environ.get(PVC_VARIABLE))
        super().__init__(
            name=pod_name(profiling_job),
            cmds=["python", "-m", PROFILING_MODULE],
            arguments=job_arguments(profiling_job),
            container_resources=pod_resources(profiling_job, memory),
            env_vars={HOME_VARIABLE: home},
            volumes=volumes,
            volume_mounts=mounts,
            labels={**POD_LABELS, "ipa/pipeline": profiling_job.pipeline},
            **kwargs,
        )
        self.job = job
