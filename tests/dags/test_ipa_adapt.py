"""``ipa_adapt`` run for real with ``dag.test()`` against the fake Kubernetes API server: the local runtime's
request counts -> forecast -> the real optimizer -> ``KubernetesHook`` over HTTP -> Deployments read back,
and the decision recorded in the day's table and in MLflow."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from kubernetes import client

from ipa_tasks.actuation.config import StageConfig, config_of
from ipa_tasks.actuation.manifests import config_map_name, stage_manifests, stage_object_name
from ipa_tasks.adaptation.decisions import EXPERIMENT, day_table_path
from ipa_tasks.adaptation.planning import planner_for
from ipa_tasks.fake_kube_api import FakeKubeHandle
from ipa_tasks.monitoring import append_rates
from ipa_tasks.settings import current_settings
from ipa_tasks.spec import resolve_spec_path

pytestmark = pytest.mark.slow

LOW, HIGH = 20, 1200  # requests/s: at 1200 the optimizer adds a detector replica and switches classifiers


@pytest.fixture
def pipeline(tmp_path: Path) -> tuple[str, Path]:
    """digit-strips under a name of its own (no other test's published profile) with its measured profile."""
    shipped = resolve_spec_path("digit-strips")
    name = f"adapt-{tmp_path.name[-12:].lower().replace('_', '-')}".strip("-")
    profile = pd.read_csv(shipped.parent / "digit-strips.measured-profile.csv")
    profile.assign(pipeline=name).to_csv(tmp_path / "profile.csv", index=False)
    text = shipped.read_text().replace("name: digit-strips", f"name: {name}", 1)
    text = text.replace("profiles: digit-strips.measured-profile.csv", "profiles: profile.csv", 1)
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(text)
    return name, spec


def expected_config(spec: Path, load: float) -> dict[str, StageConfig]:
    planner, _ = planner_for(spec, current_settings().profile_store)
    return config_of(planner.plan(load))


def seed(kube: FakeKubeHandle, spec_path: Path, config: dict[str, StageConfig]) -> None:
    planner, _ = planner_for(spec_path, current_settings().profile_store)
    api = client.ApiClient(_configuration(kube))
    for manifest in stage_manifests(planner.spec, config, image="ipa-airflow:test", namespace=kube.namespace):
        if manifest["kind"] == "Deployment":
            client.AppsV1Api(api).create_namespaced_deployment(kube.namespace, manifest)
        else:
            client.CoreV1Api(api).create_namespaced_config_map(kube.namespace, manifest)


def _configuration(kube: FakeKubeHandle) -> client.Configuration:
    from kubernetes import config as kube_config

    configuration = client.Configuration()
    kube_config.load_kube_config(config_file=str(kube.kubeconfig), client_configuration=configuration)
    return configuration


def observe_load(name: str, rps: int) -> None:
    """The local runtime's counts for the last two minutes, as its router writes them."""
    path = current_settings().home / "serving" / name / "requests.csv"
    path.unlink(missing_ok=True)
    now = int(time.time())
    append_rates(path, {second: rps for second in range(now - 130, now + 1)})


def running(kube: FakeKubeHandle, name: str, stages: list[str]) -> dict[str, StageConfig]:
    configs = {}
    for stage in stages:
        deployment = kube.get("apps/v1/deployments", stage_object_name(name, stage))
        config_map = kube.get("v1/configmaps", config_map_name(name, stage))
        env = {e["name"]: e["value"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        configs[stage] = StageConfig(
            variant=env["IPA_VARIANT"],
            batch_size=int(config_map["data"]["batch_size"]),
            cores=int(env["IPA_THREADS"]),
            replicas=int(deployment["spec"]["replicas"]),
        )
    return configs


def writes(kube: FakeKubeHandle) -> list[str]:
    return [f"{r.method} {r.path}" for r in kube.requests() if r.method in ("PATCH", "PUT", "POST", "DELETE")]


def run_tick(spec: Path, **conf):
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]).dags["ipa_adapt"]
    base = {
        "pipelines": [str(spec)],
        "forecaster": "window-max",
        "forecast_margin": 0.0,
        "target": "kubernetes",
    }
    base["ready_timeout_s"] = 5
    return dag.test(run_conf={**base, **conf})


@pytest.mark.parametrize("fake_kube", [{"run_pods": False}], indirect=True)
def test_a_load_step_changes_the_deployments_as_the_optimizer_says(airflow_db, fake_kube, pipeline):
    from mlflow import MlflowClient

    name, spec = pipeline
    low = expected_config(spec, LOW)
    high = expected_config(spec, HIGH)
    assert low != high, "the load step must change the plan for this test to mean anything"
    seed(fake_kube, spec, low)
    stages = list(low)

    observe_load(name, LOW)
    before = len(writes(fake_kube))
    assert run_tick(spec).state == "success"
    assert writes(fake_kube)[before:] == [], "an unchanged plan must not write to the cluster"
    assert running(fake_kube, name, stages) == low

    observe_load(name, HIGH)
    assert run_tick(spec).state == "success"
    assert running(fake_kube, name, stages) == high
    # Only what changed was written, scale-outs before switches.
    changed = writes(fake_kube)[before:]
    assert changed and all(w.startswith("PATCH") for w in changed)
    scale_writes = [i for i, w in enumerate(changed) if w.endswith("/scale")]
    template_writes = [i for i, w in enumerate(changed) if "/deployments/" in w and not w.endswith("/scale")]
    if scale_writes and template_writes and high["detect"].replicas > low["detect"].replicas:
        assert min(scale_writes) < min(template_writes)

    settings = current_settings()
    day = pd.read_csv(next(day_table_path(settings.home, name, "x").parent.glob("*.csv")))
    assert day["apply_status"].tolist() == ["unchanged", "applied"]
    assert day["forecast_rps"].tolist() == [LOW, HIGH]
    assert day["total_cores"].iloc[1] == sum(c.cores * c.replicas for c in high.values())

    mlflow = MlflowClient(tracking_uri=settings.tracking_uri)
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    (run,) = mlflow.search_runs([experiment.experiment_id], f"tags.`ipa.pipeline` = '{name}'")
    assert [m.value for m in mlflow.get_metric_history(run.info.run_id, "forecast_rps")] == [LOW, HIGH]
    artifacts = {f.path for f in mlflow.list_artifacts(run.info.run_id)}
    assert artifacts >= {"decisions.csv", "load_forecast_cost.png"}


@pytest.mark.parametrize("fake_kube", [{"run_pods": False}], indirect=True)
def test_a_dry_run_plans_and_records_but_writes_nothing(airflow_db, fake_kube, pipeline):
    name, spec = pipeline
    low = expected_config(spec, LOW)
    seed(fake_kube, spec, low)
    observe_load(name, HIGH)
    before = len(writes(fake_kube))
    assert run_tick(spec, dry_run=True).state == "success"
    assert writes(fake_kube)[before:] == []
    assert running(fake_kube, name, list(low)) == low
    day = pd.read_csv(next(day_table_path(current_settings().home, name, "x").parent.glob("*.csv")))
    assert day["apply_status"].tolist() == ["dry_run"] and day["steps"].iloc[0] > 0


@pytest.mark.parametrize("fake_kube", [{"run_pods": False}], indirect=True)
def test_a_fault_mid_apply_is_rolled_back_recorded_and_fails_the_run(airflow_db, fake_kube, pipeline):
    name, spec = pipeline
    low, high = expected_config(spec, LOW), expected_config(spec, HIGH)
    seed(fake_kube, spec, low)
    observe_load(name, HIGH)
    # The classifier's switch (a template patch) fails every time, after the detector has scaled out.
    assert high["classify"].variant != low["classify"].variant
    path = f"/apis/apps/v1/namespaces/{fake_kube.namespace}/deployments/{stage_object_name(name, 'classify')}"
    fake_kube.fail_next("PATCH", path, status=500, times=1000)
    assert run_tick(spec).state == "failed"
    assert running(fake_kube, name, list(low)) == low, "the steps done before the fault must be undone"
    day = pd.read_csv(next(day_table_path(current_settings().home, name, "x").parent.glob("*.csv")))
    assert day["apply_status"].tolist() == ["rolled_back"]
    assert "rolled back" in day["message"].iloc[0]


def test_ipa_adapt_is_a_30_second_loop_with_validated_params(dag_bag):
    from airflow.sdk.exceptions import ParamValidationError

    dag = dag_bag.dags["ipa_adapt"]
    assert dag.timetable.delta == timedelta(seconds=30)
    assert dag.max_active_runs == 1 and dag.catchup is False
    tasks = ["select_pipelines", "observe", "forecast", "plan", "apply", "record"]
    assert set(dag.task_ids) == set(tasks)
    assert [a.name for a in dag.get_task("plan").inlets] == ["ipa_profiles"]
    for param, bad in (("policy", "best"), ("target", "docker"), ("history_s", 1), ("pipelines", [])):
        with pytest.raises(ParamValidationError):
            dag.params.get_param(param).resolve(bad)
