"""The fake kubelet and job controller through the official client: real processes, logs, exit codes."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from ipa_tasks.fake_kube_api import FakeKubeHandle

NS = "default"
PODS = "v1/pods"


@pytest.fixture
def core(fake_kube: FakeKubeHandle) -> Iterator[client.CoreV1Api]:
    api_client = config.new_client_from_config(config_file=str(fake_kube.kubeconfig))
    yield client.CoreV1Api(api_client)
    api_client.close()


def pod(name: str, script: str, **container: Any) -> dict[str, Any]:
    base = {"name": "base", "image": "ipa-airflow:test", "command": ["python", "-c"], "args": [script]}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "test"}},
        "spec": {"restartPolicy": "Never", "containers": [base | container]},
    }


def finished(obj: dict[str, Any]) -> bool:
    return obj.get("status", {}).get("phase") in ("Succeeded", "Failed")


def running(obj: dict[str, Any]) -> bool:
    return obj.get("status", {}).get("phase") == "Running"


def log_text(core: client.CoreV1Api, name: str, **kwargs: Any) -> str:
    # Read raw: kubernetes-client 36 returns a bytes repr from the preloaded call (its issue #2596).
    return core.read_namespaced_pod_log(name, NS, _preload_content=False, **kwargs).data.decode()


def test_a_pod_runs_its_command_and_reports_the_exit_code(
    fake_kube: FakeKubeHandle, core: client.CoreV1Api
) -> None:
    script = "import sys; print('hello from pod'); print('to stderr', file=sys.stderr); sys.exit(3)"
    created = core.create_namespaced_pod(NS, pod("p", script))
    assert created.status.phase == "Pending"
    fake_kube.wait_for(PODS, "p", finished)
    status = core.read_namespaced_pod("p", NS).status
    terminated = status.container_statuses[0].state.terminated
    assert status.phase == "Failed" and terminated.exit_code == 3 and terminated.reason == "Error"
    assert terminated.finished_at is not None and status.start_time is not None and status.pod_ip
    assert {c.type: c.status for c in status.conditions}["PodScheduled"] == "True"
    assert log_text(core, "p") == "hello from pod\nto stderr\n"


def test_a_succeeding_pod_gets_env_and_expanded_args(
    fake_kube: FakeKubeHandle, core: client.CoreV1Api
) -> None:
    core.create_namespaced_config_map(NS, {"metadata": {"name": "cfg"}, "data": {"batch": "8"}})
    env = [
        {"name": "MODEL_VARIANT", "value": "small"},
        {"name": "BATCH", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "batch"}}},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    script = "import os, sys; print(*(os.environ[k] for k in ('MODEL_VARIANT', 'BATCH', 'POD')), sys.argv[1])"
    core.create_namespaced_pod(NS, pod("p", script, args=[script, "$(MODEL_VARIANT)"], env=env))
    done = fake_kube.wait_for(PODS, "p", finished)
    assert done["status"]["phase"] == "Succeeded"
    assert done["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    assert log_text(core, "p") == "small 8 p small\n" == fake_kube.pod_log("p")


def test_followed_logs_stream_while_the_pod_runs(fake_kube: FakeKubeHandle, core: client.CoreV1Api) -> None:
    script = "import time; print('first', flush=True); time.sleep(0.5); print('second')"
    core.create_namespaced_pod(NS, pod("p", script))
    fake_kube.wait_for(PODS, "p", running)
    started = time.monotonic()
    stream = core.read_namespaced_pod_log("p", NS, follow=True, timestamps=True, _preload_content=False)
    lines = [line.decode() for line in stream.stream() for line in line.splitlines()]
    assert time.monotonic() - started > 0.2  # the response ended only when the process did
    assert [line.split(" ", 1)[1] for line in lines] == ["first", "second"]
    assert all(line.split(" ", 1)[0].endswith("Z") for line in lines)
    assert core.read_namespaced_pod("p", NS).status.phase == "Succeeded"
    assert log_text(core, "p", tail_lines=1) == "second\n"


def test_deleting_a_pod_kills_its_process(fake_kube: FakeKubeHandle, core: client.CoreV1Api) -> None:
    core.create_namespaced_pod(NS, pod("sleeper", "import time; time.sleep(60)"))
    fake_kube.wait_for(PODS, "sleeper", running)
    pid = fake_kube.pod_pids()["default/sleeper"]
    core.delete_namespaced_pod("sleeper", NS)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    assert not _alive(pid)
    with pytest.raises(ApiException) as gone:
        core.read_namespaced_pod("sleeper", NS)
    assert gone.value.status == 404


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_an_unknown_executable_fails_to_start(fake_kube: FakeKubeHandle, core: client.CoreV1Api) -> None:
    core.create_namespaced_pod(NS, pod("p", "", command=["no-such-binary-here"], args=[]))
    done = fake_kube.wait_for(PODS, "p", finished)
    terminated = done["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (
        done["status"]["phase"] == "Failed"
        and terminated["exitCode"] == 128
        and terminated["reason"] == "StartError"
    )


@pytest.mark.parametrize("fake_kube", [{"run_pods": False}], indirect=True)
def test_without_run_pods_a_pod_succeeds_with_a_fixed_log_line(
    fake_kube: FakeKubeHandle, core: client.CoreV1Api
) -> None:
    core.create_namespaced_pod(NS, pod("p", "raise SystemExit(1)"))
    done = fake_kube.wait_for(PODS, "p", finished)
    assert done["status"]["phase"] == "Succeeded"
    assert log_text(core, "p") == "fake kubelet: pod p was not run (run_pods is disabled)\n"


@pytest.mark.parametrize("fake_kube", [{"pod_start_delay": 0.5}], indirect=True)
def test_logs_of_a_pending_pod_are_a_400(fake_kube: FakeKubeHandle, core: client.CoreV1Api) -> None:
    core.create_namespaced_pod(NS, pod("p", "print(1)"))
    with pytest.raises(ApiException) as waiting:
        core.read_namespaced_pod_log("p", NS)
    assert waiting.value.status == 400 and "ContainerCreating" in waiting.value.body
    assert fake_kube.wait_for(PODS, "p", finished)["status"]["phase"] == "Succeeded"


def job(name: str, script: str, backoff_limit: int = 0) -> dict[str, Any]:
    template = pod(name, script)
    template.pop("apiVersion"), template.pop("kind"), template["metadata"].pop("name")
    return {"metadata": {"name": name}, "spec": {"backoffLimit": backoff_limit, "template": template}}


def test_a_job_runs_its_pod_and_completes(fake_kube: FakeKubeHandle, core: client.CoreV1Api) -> None:
    batch = client.BatchV1Api(core.api_client)
    batch.create_namespaced_job(NS, job("profile", "print('profiled')"))
    done = fake_kube.wait_for("batch/v1/jobs", "profile", lambda j: j.get("status", {}).get("conditions"))
    assert done["status"]["succeeded"] == 1 and done["status"]["conditions"][0]["type"] == "Complete"
    (job_pod,) = core.list_namespaced_pod(NS, label_selector="job-name=profile").items
    assert job_pod.metadata.owner_references[0].uid == done["metadata"]["uid"]
    assert log_text(core, job_pod.metadata.name) == "profiled\n"
    batch.delete_namespaced_job("profile", NS, propagation_policy="Background")
    deadline = time.monotonic() + 5
    while (
        core.list_namespaced_pod(NS, label_selector="job-name=profile").items and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    assert core.list_namespaced_pod(NS, label_selector="job-name=profile").items == []


def test_a_failing_job_retries_until_the_backoff_limit(
    fake_kube: FakeKubeHandle, core: client.CoreV1Api
) -> None:
    client.BatchV1Api(core.api_client).create_namespaced_job(
        NS, job("bad", "raise SystemExit(2)", backoff_limit=1)
    )
    done = fake_kube.wait_for("batch/v1/jobs", "bad", lambda j: j.get("status", {}).get("conditions"))
    condition = done["status"]["conditions"][0]
    assert (condition["type"], condition["reason"], done["status"]["failed"]) == (
        "Failed",
        "BackoffLimitExceeded",
        2,
    )
    assert len(core.list_namespaced_pod(NS, label_selector="job-name=bad").items) == 2
