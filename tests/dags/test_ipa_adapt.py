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

from ipa_tasks.actuation.config import StageConfig, config_of, plan_steps
from ipa_tasks.actuation.manifests import config_map_name, stage_manifests, stage_object_name
from ipa_tasks.adaptation.decisions import EXPERIMENT, day_table_path
from ipa_tasks.adaptation.planning import planner_for
from ipa_tasks.fake_kube_api import FakeKubeHandle
from ipa_tasks.monitoring import append_rates
from ipa_tasks.settings import current_settings
from ipa_tasks.spec import resolve_spec_path

pytestmark = pytest.mark.slow

LOW, HIGH = 20, 1200  # requests/s: at 1200 the optimizer adds a detector replica and switches classifiers


def digit_strips_as(name: str, folder: Path) -> Path:
    """digit-strips under a name of its own (no other test's published profile) with its measured profile."""
    shipped = resolve_spec_path("digit-strips")
    profile = pd.read_csv(shipped.parent / "digit-strips.measured-profile.csv")
    profile.assign(pipeline=name).to_csv(folder / f"{name}.profile.csv", index=False)
    text = shipped.read_text().replace("name: digit-strips", f"name: {name}", 1)
    text = text.replace("profiles: digit-strips.measured-profile.csv", f"profiles: {name}.profile.csv", 1)
    spec = folder / f"{name}.yaml"
    spec.write_text(text)
    return spec


@pytest.fixture
def pipeline(tmp_path: Path) -> tuple[str, Path]:
    name = f"adapt-{tmp_path.name[-12:].lower().replace('_', '-')}".strip("-")
    return name, digit_strips_as(name, tmp_path)


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
    """The local runtime's counts for the last two minutes, as its router writes them, and for the next
    minute (the router keeps counting while the DAG starts)."""
    path = current_settings().home / "serving" / name / "requests.csv"
    path.unlink(missing_ok=True)
    now = int(time.time())
    append_rates(path, {second: rps for second in range(now - 130, now + 60)})


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


def day_table(name: str) -> pd.DataFrame:
    """The pipeline's decisions of today (the test's ticks all fall on one UTC day, or on two at midnight)."""
    folder = day_table_path(current_settings().home, name, "any day").parent
    return pd.concat([pd.read_csv(path) for path in sorted(folder.glob("*.csv"))], ignore_index=True)


def writes(kube: FakeKubeHandle) -> list[str]:
    return [f"{r.method} {r.path}" for r in kube.requests() if r.method in ("PATCH", "PUT", "POST", "DELETE")]


def expected_writes(namespace: str, name: str, low, high) -> list[str]:
    """The requests the steps from ``low`` to ``high`` make, in order (``KubernetesTarget``'s contract)."""
    deployments = f"PATCH /apis/apps/v1/namespaces/{namespace}/deployments"
    config_maps = f"PATCH /api/v1/namespaces/{namespace}/configmaps"
    requests = []
    for step in plan_steps(low, high):
        if step.kind in ("scale_out", "scale_in"):
            requests.append(f"{deployments}/{stage_object_name(name, step.stage)}/scale")
        else:
            requests.append(f"{config_maps}/{config_map_name(name, step.stage)}")
            if step.kind == "switch":
                requests.append(f"{deployments}/{stage_object_name(name, step.stage)}")
    return requests


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
    # Exactly what changed was written, in the safe order: the detector scales out before any switch.
    assert high["detect"].replicas > low["detect"].replicas
    assert high["classify"].variant != low["classify"].variant
    changed = writes(fake_kube)[before:]
    assert changed == expected_writes(fake_kube.namespace, name, low, high)
    assert changed[0].endswith(f"/deployments/{stage_object_name(name, 'detect')}/scale")

    settings = current_settings()
    day = day_table(name)
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
@pytest.mark.parametrize("asked_by", ["param", "variable"])
def test_a_dry_run_plans_and_records_but_writes_nothing(
    airflow_db, fake_kube, pipeline, asked_by, monkeypatch
):
    name, spec = pipeline
    low = expected_config(spec, LOW)
    seed(fake_kube, spec, low)
    observe_load(name, HIGH)
    before = len(writes(fake_kube))
    if asked_by == "variable":
        monkeypatch.setenv("AIRFLOW_VAR_IPA_ADAPT_DRY_RUN", "true")
    conf = {"dry_run": True} if asked_by == "param" else {}
    assert run_tick(spec, **conf).state == "success"
    assert writes(fake_kube)[before:] == []
    assert running(fake_kube, name, list(low)) == low
    day = day_table(name)
    assert day["apply_status"].tolist() == ["dry_run"] and day["steps"].iloc[0] > 0
    assert day["dry_run"].tolist() == [1] and day["steps_applied"].tolist() == [0]


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
    # The detector did scale out before the fault, and was scaled back in.
    detect = fake_kube.history("apps/v1/deployments", stage_object_name(name, "detect"))
    replicas = [v["spec"]["replicas"] for v in detect if v is not None]
    n = low["detect"].replicas
    assert [r for i, r in enumerate(replicas) if i == 0 or r != replicas[i - 1]] == [n, n + 1, n]
    day = day_table(name)
    assert day["apply_status"].tolist() == ["rolled_back"]
    assert "rolled back" in day["message"].iloc[0]


@pytest.mark.parametrize("fake_kube", [{"run_pods": False}], indirect=True)
def test_a_pipeline_that_fails_does_not_stop_the_others(airflow_db, fake_kube, tmp_path: Path):
    suffix = "".join(c for c in tmp_path.name.lower() if c.isalnum())[-6:]
    healthy, broken = (digit_strips_as(f"{tag}-{suffix}", tmp_path) for tag in ("healthy", "broken"))
    names = [p.stem for p in (healthy, broken)]
    low, high = expected_config(healthy, LOW), expected_config(healthy, HIGH)
    seed(fake_kube, healthy, low)  # the broken pipeline's stages are not deployed: its apply is refused
    for name in names:
        observe_load(name, HIGH)
    run = run_tick(healthy, pipelines=[str(healthy), str(broken)])
    assert run.state == "failed"
    assert running(fake_kube, names[0], list(low)) == high, "the healthy pipeline is adapted all the same"
    states = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
    assert states[("tick.record", 0)] == "success" and states[("tick.record", 1)] == "failed"
    broken_day = day_table(names[1])
    assert broken_day["apply_status"].tolist() == ["rolled_back"]
    assert "is not deployed" in broken_day["message"].iloc[0]


def test_ipa_adapt_is_a_30_second_loop_with_validated_params(dag_bag):
    from airflow.sdk.exceptions import ParamValidationError

    dag = dag_bag.dags["ipa_adapt"]
    assert dag.timetable.delta == timedelta(seconds=30)
    assert dag.max_active_runs == 1 and dag.catchup is False
    tasks = ["select_pipelines", *(f"tick.{t}" for t in ("observe", "forecast", "plan", "apply", "record"))]
    assert set(dag.task_ids) == set(tasks)
    assert [a.name for a in dag.get_task("tick.plan").inlets] == ["ipa_profiles"]
    for param, bad in (("policy", "best"), ("target", "docker"), ("history_s", 1), ("pipelines", [])):
        with pytest.raises(ParamValidationError):
            dag.params.get_param(param).resolve(bad)
