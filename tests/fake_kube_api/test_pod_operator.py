"""Airflow's real KubernetesPodOperator end to end against the fake API server.

A two-task DAG (one pod prints, one exits with 3) runs with ``dag.test()`` in a subprocess that has its own
``AIRFLOW_HOME``, migrated SQLite DB and dags folder: Airflow 3.3's ``dag.test()`` needs the DAG in a
bundle and a DB, and Airflow reads ``AIRFLOW_HOME`` and the DB URL once, at its first import, which in a
shared pytest process may already have happened with other settings. The fake server runs in the pytest
process (the ``fake_kube`` fixture); the subprocess inherits ``AIRFLOW_CONN_IPA_KUBERNETES`` and the
pods run as processes of the fake's kubelet, so the assertions cover both sides.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from ipa_tasks.fake_kube_api import FakeKubeHandle

DAG_ID = "fake_kube_pods"
IMAGE = "ipa-airflow:test"
HELLO_ARGS = ["-c", "print('hello from pod')"]
FAIL_ARGS = ["-c", "import sys; print('about to fail'); sys.exit(3)"]
REQUESTS = {"cpu": "100m", "memory": "64Mi"}
LIMITS = {"cpu": "1", "memory": "256Mi"}

DAG_SOURCE = f'''
"""Two pods through the ipa_kubernetes connection: one prints a line, one fails with exit code 3."""
import datetime

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk import DAG
from kubernetes.client import models as k8s

COMMON = dict(
    image={IMAGE!r},
    cmds=["python"],
    in_cluster=False,
    kubernetes_conn_id="ipa_kubernetes",
    get_logs=True,
    do_xcom_push=False,
    on_finish_action="delete_pod",
    startup_check_interval_seconds=1,
    retries=0,
)
with DAG({DAG_ID!r}, schedule=None, start_date=datetime.datetime(2026, 1, 1)):
    KubernetesPodOperator(
        task_id="hello",
        name="hello",
        arguments={HELLO_ARGS!r},
        container_resources=k8s.V1ResourceRequirements(requests={REQUESTS!r}, limits={LIMITS!r}),
        **COMMON,
    )
    KubernetesPodOperator(task_id="fail", name="fail", arguments={FAIL_ARGS!r}, **COMMON)
'''

RUNNER = f"""
import json, sys
from airflow.utils import db
db.upgradedb()  # what `airflow db migrate` runs, on this AIRFLOW_HOME's SQLite DB
from airflow.dag_processing.dagbag import DagBag
run = DagBag(dag_folder=sys.argv[1]).get_dag({DAG_ID!r}).test()
states = {{ti.task_id: getattr(ti.state, "value", ti.state) for ti in run.get_task_instances()}}
print("RESULT " + json.dumps(states), flush=True)
"""


def run_dag_test(tmp_path: Path) -> tuple[dict[str, str], str]:
    """Run the DAG with ``dag.test()`` in a fresh Airflow home; the task states and the whole output."""
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / f"{DAG_ID}.py").write_text(textwrap.dedent(DAG_SOURCE))
    env = os.environ | {
        "AIRFLOW_HOME": str(tmp_path / "airflow-home"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    result = subprocess.run(
        [sys.executable, "-c", RUNNER, str(dags)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, output[-5000:]
    return json.loads(lines[-1].removeprefix("RESULT ")), output


def pod_versions(kube: FakeKubeHandle, task_id: str) -> list[dict[str, Any] | None]:
    """All stored versions of the pod the task created (found by the operator's task_id label)."""
    histories = kube.histories("v1/pods", "default")
    matching = [
        versions
        for versions in histories.values()
        if versions[0] is not None and versions[0]["metadata"]["labels"].get("task_id") == task_id
    ]
    assert len(matching) == 1, histories.keys()
    return matching[0]


@pytest.mark.slow  # Airflow start-up and its DB migration in a subprocess: 15-35 s
def test_kubernetes_pod_operator_runs_logs_and_deletes_pods(
    fake_kube: FakeKubeHandle, tmp_path: Path
) -> None:
    states, output = run_dag_test(tmp_path)

    assert states == {"hello": "success", "fail": "failed"}
    # The pod's real output was streamed into the task log by the provider's PodManager.
    assert "[base] hello from pod" in output and "[base] about to fail" in output
    # The failing task's exception carries the pod, with the container's exit code.
    assert "returned a failure" in output and "'exit_code': 3" in output

    hello = pod_versions(fake_kube, "hello")
    created, *_, last_seen, deleted = hello
    assert created is not None and last_seen is not None and deleted is None
    container = created["spec"]["containers"][0]
    assert (
        container["image"] == IMAGE and container["command"] == ["python"] and container["args"] == HELLO_ARGS
    )
    assert container["resources"] == {"requests": REQUESTS, "limits": LIMITS}
    assert last_seen["status"]["phase"] == "Succeeded"
    assert last_seen["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0

    failed = pod_versions(fake_kube, "fail")
    assert failed[-1] is None and failed[-2] is not None
    assert failed[-2]["status"]["phase"] == "Failed"
    assert failed[-2]["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3
    assert failed[-2]["metadata"]["labels"]["already_checked"] == "True"  # patched before deletion

    followed = [r for r in fake_kube.requests() if r.path.endswith("/log")]
    assert len(followed) == 2 and all("follow=True" in r.query for r in followed)


def test_kubernetes_hook_reaches_the_fake_through_the_connection(fake_kube: FakeKubeHandle) -> None:
    # In-process: tests/__init__.py has already pointed AIRFLOW_HOME at the session's folder.
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

    hook = KubernetesHook(conn_id="ipa_kubernetes")
    assert hook.get_conn().configuration.host == fake_kube.url and hook.get_namespace() == "default"
    body = {
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "s", "image": "i"}]},
            },
        },
    }
    hook.apps_v1_client.create_namespaced_deployment("default", body)
    hook.apps_v1_client.patch_namespaced_deployment_scale("web", "default", {"spec": {"replicas": 3}})
    fake_kube.wait_for("apps/v1/deployments", "web", lambda d: d.get("status", {}).get("readyReplicas") == 3)
    assert hook.get_deployment_status("web").status.ready_replicas == 3
