"""The profiling job as a pod: the pod spec it gets, and a whole ``ipa_profile`` round run through the real
``KubernetesPodOperator`` against the fake API server, whose kubelet runs each pod's command for real."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ipa_tasks.fake_kube_api import FakeKubeHandle
from ipa_tasks.profile_store import ProfileStore
from ipa_tasks.profiling_job import ProfilingJob, job_arguments
from ipa_tasks.profiling_pod import POD_LABELS, ProfilingPodOperator, pod_name
from ipa_tasks.settings import current_settings

JOB = ProfilingJob(
    "digit-strips", "digit-strips", "classify", "cls_MLP_s", (1, 8), (1, 2), 30, 5, "/ipa/rounds/r/x.parquet"
)


def pod_of(job: ProfilingJob):
    # Building the request asks the connection whether Airflow runs in the cluster: the fake answers.
    operator = ProfilingPodOperator(
        task_id="profile_in_pod",
        job=job.to_dict(),
        image="ipa-airflow:test",
        kubernetes_conn_id="ipa_kubernetes",
    )
    return operator.build_pod_request_obj()


NO_PODS = pytest.mark.parametrize("fake_kube", [{"run_pods": False}], indirect=True)


@NO_PODS
def test_the_pod_runs_the_job_with_its_arguments_and_exactly_its_cores(
    fake_kube, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("IPA_HOME_PVC", raising=False)
    pod = pod_of(JOB)
    (container,) = pod.spec.containers
    assert container.image == "ipa-airflow:test"
    assert container.command == ["python", "-m", "profiling_jobs.profile_variant"]
    assert container.args == job_arguments(JOB)
    assert container.resources.requests == container.resources.limits == {"cpu": "2", "memory": "2Gi"}
    assert {e.name: e.value for e in container.env}["IPA_HOME"] == str(current_settings().home)
    assert POD_LABELS.items() <= pod.metadata.labels.items()
    assert pod.metadata.labels["ipa/pipeline"] == "digit-strips"
    assert pod.metadata.name.startswith("profile-digit-strips-cls-mlp-s")
    assert not pod.spec.volumes


@NO_PODS
def test_with_a_claim_the_pod_mounts_ipa_home_where_the_workers_see_it(
    fake_kube, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("IPA_HOME_PVC", "ipa-home")
    pod = pod_of(JOB)
    (volume,) = pod.spec.volumes
    assert volume.persistent_volume_claim.claim_name == "ipa-home"
    (mount,) = pod.spec.containers[0].volume_mounts
    assert mount.mount_path == str(current_settings().home)


def test_pod_names_are_dns_safe():
    long = ProfilingJob("P" * 80, "x", "s", "v_1", (1,), (1,), 20, 0, "o")
    assert len(pod_name(long)) <= 50 and pod_name(long).islower() and "_" not in pod_name(long)


SPEC = """\
name: digits-pods
sla_s: 1.0
stages:
  - name: classify
    batch_sizes: [1, 8]
    cores: [1]
    variants:
      - name: knn
        model: {kind: python, uri: "tests.profiling_jobs.digits_variant:nearest_neighbors"}
"""


@pytest.mark.slow
def test_a_round_with_the_kubernetes_runner_profiles_in_pods(
    fake_kube: FakeKubeHandle, airflow_db, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from airflow.dag_processing.dagbag import DagBag

    spec = tmp_path / "digits-pods.yaml"
    spec.write_text(SPEC)
    # The fake kubelet runs pods on this filesystem; the claim name is what a cluster would mount.
    monkeypatch.setenv("IPA_HOME_PVC", "ipa-home")
    dag = DagBag(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]).dags["ipa_profile"]
    # "auto" picks pods because the fixture defined the ipa_kubernetes connection.
    run = dag.test(run_conf={"pipelines": [str(spec)], "repetitions": 20, "warmup": 2, "runner": "auto"})
    assert run.state == "success"

    pods = fake_kube.histories("v1/pods")
    (versions,) = pods.values()
    created = next(v for v in versions if v is not None)
    container = created["spec"]["containers"][0]
    assert container["args"][:6] == ["--spec", str(spec), "--stage", "classify", "--variant", "knn"]
    assert container["resources"]["limits"]["cpu"] == "1"
    assert created["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "ipa-home"
    last_seen = [v for v in versions if v is not None][-1]
    assert last_seen["status"]["phase"] == "Succeeded"
    assert versions[-1] is None, "the pod is deleted when it is done"
    current = ProfileStore(current_settings().profile_store).current("digits-pods")
    assert current is not None and sorted(current["batch_size"]) == [1, 8]


def test_pods_without_a_shared_home_are_refused_with_what_to_set(monkeypatch: pytest.MonkeyPatch):
    from ipa_tasks.profiling_pod import NoSharedHome, require_shared_home

    monkeypatch.delenv("IPA_HOME_PVC", raising=False)
    with pytest.raises(NoSharedHome, match=r"set IPA_HOME_PVC .* or run the round with runner=local"):
        require_shared_home()
    monkeypatch.setenv("IPA_HOME_PVC", "ipa-home")
    assert require_shared_home() == "ipa-home"
