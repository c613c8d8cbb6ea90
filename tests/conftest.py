"""Shared fixtures: ``fake_kube``, a fake Kubernetes API server wired to the ``ipa_kubernetes`` connection;
``airflow_db``, Airflow's metadata database migrated once per session (in the session's ``AIRFLOW_HOME``, see
``tests/__init__.py``); ``dag_bag``, the project's DAGs parsed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ipa_tasks.fake_kube_api import FakeKubeHandle, FakeKubeOptions, run_fake_kube_api


@pytest.fixture
def fake_kube(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeKubeHandle]:
    """A fresh fake cluster (pods run as local processes) for one test.

    ``AIRFLOW_CONN_IPA_KUBERNETES`` points at it, so ``KubernetesHook(conn_id="ipa_kubernetes")`` and
    subprocesses started by the test use it. Change the options with indirect parametrization, e.g.
    ``@pytest.mark.parametrize("fake_kube", [{"run_pods": False}], indirect=True)``.
    """
    overrides = getattr(request, "param", {})
    options = FakeKubeOptions(**{"run_pods": True, **overrides})
    with run_fake_kube_api(tmp_path / "fake-kube", options=options) as kube:
        extra = {"kube_config_path": str(kube.kubeconfig), "namespace": kube.namespace}
        monkeypatch.setenv(
            "AIRFLOW_CONN_IPA_KUBERNETES", json.dumps({"conn_type": "kubernetes", "extra": extra})
        )
        yield kube


@pytest.fixture(scope="session")
def airflow_db() -> Iterator[Path]:
    home = Path(os.environ["AIRFLOW_HOME"])
    done = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    yield home


@pytest.fixture
def dag_bag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
