"""The Kubernetes target through the real path: the fake API server's kubeconfig -> the Airflow connection
``ipa_kubernetes`` -> ``KubernetesHook`` -> HTTP -> the fake. Assertions are on what the fake stored
(read back with ``fake_kube.get``/``history``) and on the requests it served."""

from __future__ import annotations

import copy
import json
import logging
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from ipa_tasks.actuation.config import StageConfig, Step
from ipa_tasks.actuation.kubernetes import KubernetesTarget
from ipa_tasks.actuation.manifests import stage_manifests
from ipa_tasks.actuation.target import TargetError, apply_change
from ipa_tasks.fake_kube_api import FakeKubeHandle, write_kubeconfig
from tests.actuation.test_manifests import CONFIG, IMAGE, SPEC

NO_PODS = pytest.mark.parametrize("fake_kube", [{"run_pods": False}], indirect=True)
SLOW_STATUS = pytest.mark.parametrize(
    "fake_kube", [{"run_pods": False, "workload_delay": 0.4}], indirect=True
)
DEPLOYMENTS, CONFIG_MAPS = "apps/v1/deployments", "v1/configmaps"
NS = "default"
DEP_PATH = f"/apis/apps/v1/namespaces/{NS}/deployments"
CM_PATH = f"/api/v1/namespaces/{NS}/configmaps"
WRITES = ("PATCH", "PUT", "POST", "DELETE")
Edit = Callable[[dict[str, Any]], None]


@pytest.fixture
def api(fake_kube: FakeKubeHandle) -> Iterator[client.ApiClient]:
    """The test's own client, to seed and tweak the cluster (not the target's)."""
    api_client = config.new_client_from_config(config_file=str(fake_kube.kubeconfig))
    yield api_client
    api_client.close()


def seed(
    fake_kube: FakeKubeHandle,
    api: client.ApiClient,
    stages: Any = CONFIG,
    edit: Edit | None = None,
) -> None:
    """Create the stages' objects as the chart would; wait until the controller has written the status."""
    for obj in stage_manifests(SPEC, stages, image=IMAGE, namespace=NS):
        if edit is not None:
            edit(obj)
        if obj["kind"] == "Deployment":
            client.AppsV1Api(api).create_namespaced_deployment(NS, obj)
        else:
            client.CoreV1Api(api).create_namespaced_config_map(NS, obj)
    for obj in stage_manifests(SPEC, stages, image=IMAGE, namespace=NS):
        if obj["kind"] == "Deployment":
            fake_kube.wait_for(DEPLOYMENTS, obj["metadata"]["name"], lambda d: "status" in d, timeout=5)


def make_target(**overrides: Any) -> KubernetesTarget:
    options: dict[str, Any] = {"request_timeout_s": 2.0, "backoff_s": 0.0, "sleep": lambda s: None}
    return KubernetesTarget(**{**options, **overrides})


def writes(fake_kube: FakeKubeHandle, since: int = 0) -> list[tuple[str, str, int]]:
    return [(r.method, r.path, r.status) for r in fake_kube.requests()[since:] if r.method in WRITES]


def snapshot(fake_kube: FakeKubeHandle) -> dict[str, Any]:
    """What the stored objects say a stage runs (spec and data; not status or metadata)."""
    deployments = {d["metadata"]["name"]: d["spec"] for d in fake_kube.list(DEPLOYMENTS, NS)}
    config_maps = {c["metadata"]["name"]: c.get("data") for c in fake_kube.list(CONFIG_MAPS, NS)}
    return {"deployments": deployments, "configmaps": config_maps}


def env_of(deployment: dict[str, Any], container: str = "stage-server") -> dict[str, str]:
    (found,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == container]
    return {e["name"]: e["value"] for e in found["env"]}


def step(kind: Any, stage: str, **changes: Any) -> Step:
    before = CONFIG.get(stage, CONFIG["detect"])
    return Step(kind, stage, None if kind == "create" else before, replace(before, **changes))


# ------------------------------------------------------------------------------------------ reading


@NO_PODS
def test_read_returns_exactly_the_seeded_config_and_only_owned_objects(
    fake_kube: FakeKubeHandle, api: client.ApiClient
) -> None:
    seed(fake_kube, api)
    unowned = stage_manifests(SPEC, CONFIG, image=IMAGE, namespace=NS)[1]
    unowned["metadata"] = {"name": "video-tracker"}  # a stranger's Deployment in the same namespace
    client.AppsV1Api(api).create_namespaced_deployment(NS, unowned)
    target = make_target()
    assert target.name == "kubernetes namespace default (connection ipa_kubernetes)"
    assert target.read(SPEC) == CONFIG
    lists = [r.query for r in fake_kube.requests() if r.method == "GET" and r.path in (DEP_PATH, CM_PATH)]
    assert lists == ["labelSelector=app.kubernetes.io/part-of%3Dipa,ipa/pipeline%3Dvideo"] * 2


@NO_PODS
def test_a_stage_without_a_deployment_is_absent_and_a_missing_configmap_falls_back_to_the_env(
    fake_kube: FakeKubeHandle, api: client.ApiClient
) -> None:
    seed(fake_kube, api, {"classify": CONFIG["classify"]})
    client.CoreV1Api(api).patch_namespaced_config_map(
        "video-classify-config", NS, {"data": {"batch_size": "8"}}
    )
    assert make_target().read(SPEC) == {
        "classify": replace(CONFIG["classify"], batch_size=8)
    }  # the file wins
    client.CoreV1Api(api).delete_namespaced_config_map("video-classify-config", NS)
    assert make_target().read(SPEC) == {"classify": CONFIG["classify"]}  # IPA_BATCH_SIZE, the start value


def _set_env(name: str, value: str | None) -> Edit:
    def edit(obj: dict[str, Any]) -> None:
        if obj["kind"] == "Deployment" and obj["metadata"]["name"] == "video-detect":
            container = obj["spec"]["template"]["spec"]["containers"][0]
            container["env"] = [e for e in container["env"] if e["name"] != name]
            if value is not None:
                container["env"].append({"name": name, "value": value})

    return edit


def _set_batch_data(value: str) -> Edit:
    def edit(obj: dict[str, Any]) -> None:
        if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == "video-detect-config":
            obj["data"]["batch_size"] = value

    return edit


def _rename_container(obj: dict[str, Any]) -> None:
    if obj["kind"] == "Deployment":
        obj["spec"]["template"]["spec"]["containers"][0]["name"] = "server"


@NO_PODS
@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_set_env("IPA_THREADS", "two"), "deployment default/video-detect: container stage-server: env "
         "IPA_THREADS is not an integer: 'two'"),
        (_set_env("IPA_VARIANT", None), "deployment default/video-detect: container stage-server: env "
         "IPA_VARIANT is missing"),
        (_set_batch_data("eight"), "configmap default/video-detect-config: data.batch_size is not an "
         "integer: 'eight'"),
        (_set_batch_data("0"), "configmap default/video-detect-config: data.batch_size must be at least 1"),
        (_rename_container, "deployment default/video-detect: spec.template.spec.containers has no "
         "container named 'stage-server'"),
    ],
)  # fmt: skip
def test_a_malformed_owned_object_is_an_error_naming_it_and_the_field(
    fake_kube: FakeKubeHandle, api: client.ApiClient, edit: Edit, message: str
) -> None:
    seed(fake_kube, api, edit=edit)
    with pytest.raises(TargetError) as failed:
        make_target().read(SPEC)
    assert message in str(failed.value)


# ------------------------------------------------------------------------------------------- steps


@NO_PODS
def test_scaling_changes_only_the_replicas(fake_kube: FakeKubeHandle, api: client.ApiClient) -> None:
    seed(fake_kube, api)
    before, since = snapshot(fake_kube), len(fake_kube.requests())
    target = make_target()
    target.apply_step(SPEC, step("scale_out", "detect", replicas=5))
    target.apply_step(SPEC, step("scale_in", "classify", replicas=1))
    assert writes(fake_kube, since) == [
        ("PATCH", f"{DEP_PATH}/video-detect/scale", 200),
        ("PATCH", f"{DEP_PATH}/video-classify/scale", 200),
    ]
    expected = copy.deepcopy(before)
    expected["deployments"]["video-detect"]["replicas"] = 5
    expected["deployments"]["video-classify"]["replicas"] = 1
    assert snapshot(fake_kube) == expected
    assert target.read(SPEC) == {
        "detect": replace(CONFIG["detect"], replicas=5),
        "classify": replace(CONFIG["classify"], replicas=1),
    }


@NO_PODS
def test_a_batch_change_writes_only_the_configmap_so_no_pod_restarts(
    fake_kube: FakeKubeHandle, api: client.ApiClient
) -> None:
    seed(fake_kube, api)
    deployment = fake_kube.get(DEPLOYMENTS, "video-detect")
    versions = len(fake_kube.history(DEPLOYMENTS, "video-detect"))
    since = len(fake_kube.requests())
    target = make_target()
    target.apply_step(SPEC, step("batch", "detect", batch_size=8))
    assert writes(fake_kube, since) == [("PATCH", f"{CM_PATH}/video-detect-config", 200)]
    assert fake_kube.get(CONFIG_MAPS, "video-detect-config")["data"] == {"batch_size": "8"}
    after = fake_kube.get(DEPLOYMENTS, "video-detect")
    assert after == deployment  # same generation, same template: nothing to roll out
    assert after["metadata"]["generation"] == 1
    assert len(fake_kube.history(DEPLOYMENTS, "video-detect")) == versions
    assert env_of(after)["IPA_BATCH_SIZE"] == "2"  # the start value; the mounted file says 8
    assert target.read(SPEC)["detect"] == replace(CONFIG["detect"], batch_size=8)


def _with_sidecar(obj: dict[str, Any]) -> None:
    if obj["kind"] == "Deployment":
        pod = obj["spec"]["template"]["spec"]
        pod["containers"][0]["env"].append({"name": "LOG_LEVEL", "value": "debug"})
        pod["containers"].append(
            {"name": "log-shipper", "image": "shipper:1", "env": [{"name": "A", "value": "1"}]}
        )
        pod["nodeSelector"] = {"pool": "cpu"}


@NO_PODS
def test_a_switch_merges_the_variant_cores_and_batch_into_the_stage_server_only(
    fake_kube: FakeKubeHandle, api: client.ApiClient
) -> None:
    seed(fake_kube, api, edit=_with_sidecar)
    before, since = fake_kube.get(DEPLOYMENTS, "video-classify"), len(fake_kube.requests())
    make_target().apply_step(SPEC, step("switch", "classify", variant="resnet50", cores=4, batch_size=8))
    assert writes(fake_kube, since) == [
        ("PATCH", f"{CM_PATH}/video-classify-config", 200),  # first, so new pods start with the new file
        ("PATCH", f"{DEP_PATH}/video-classify", 200),
    ]
    after = fake_kube.get(DEPLOYMENTS, "video-classify")
    expected = copy.deepcopy(before["spec"])
    server = expected["template"]["spec"]["containers"][0]
    values = {"IPA_VARIANT": "resnet50", "IPA_THREADS": "4", "IPA_BATCH_SIZE": "8"}
    server["env"] = [{**e, "value": values.get(e["name"], e["value"])} for e in server["env"]]
    server["resources"] = {"requests": {"cpu": "4"}, "limits": {"cpu": "4"}}
    assert after["spec"] == expected  # image, LOG_LEVEL, the sidecar, volumes, nodeSelector all kept
    assert after["metadata"]["generation"] == before["metadata"]["generation"] + 1  # a rolling restart
    assert fake_kube.get(CONFIG_MAPS, "video-classify-config")["data"] == {"batch_size": "8"}
    assert make_target().read(SPEC)["classify"] == StageConfig("resnet50", batch_size=8, cores=4, replicas=3)


# ---------------------------------------------------------------------------------------- refusals


@NO_PODS
@pytest.mark.parametrize(
    ("refused", "message"),
    [
        (step("scale_out", "detect", replicas=6), "6 replicas is outside the spec's bounds 1..5"),
        (step("scale_in", "detect", replicas=0), "0 replicas is outside the spec's bounds 1..5"),
        (step("switch", "classify", variant="resnet50", replicas=9), "outside the spec's bounds"),
        (step("scale_out", "track", replicas=3), "pipeline 'video' has no stage 'track'"),
        (step("switch", "detect", variant="yolo_x"), "stage 'detect' has no variant 'yolo_x'"),
        (step("switch", "detect", cores=3), r"stage detect offers \[1, 2, 4\] cores per replica"),
        (step("create", "detect"), "stage detect of video is not deployed in namespace default; install"),
    ],
)
def test_steps_the_spec_does_not_allow_are_refused_before_any_request(
    fake_kube: FakeKubeHandle, api: client.ApiClient, refused: Step, message: str
) -> None:
    seed(fake_kube, api)
    before, since = snapshot(fake_kube), len(fake_kube.requests())
    with pytest.raises(TargetError, match=message):
        make_target().apply_step(SPEC, refused)
    assert fake_kube.requests()[since:] == []
    assert snapshot(fake_kube) == before


@NO_PODS
def test_a_stage_that_is_not_deployed_is_not_created(
    fake_kube: FakeKubeHandle, api: client.ApiClient
) -> None:
    seed(fake_kube, api, {"classify": CONFIG["classify"]})
    target, since = make_target(), len(fake_kube.requests())
    with pytest.raises(TargetError, match="apply `stage_manifests`"):
        target.apply_step(SPEC, step("scale_out", "detect", replicas=3))  # a plan from a stale read
    with pytest.raises(TargetError, match="never deletes"):
        target.remove(SPEC, "classify")
    assert writes(fake_kube, since) == []
    assert fake_kube.get(DEPLOYMENTS, "video-detect") is None


def _unowned(name: str) -> Edit:
    def edit(obj: dict[str, Any]) -> None:
        if obj["metadata"]["name"] == name:
            del obj["metadata"]["labels"]

    return edit


@NO_PODS
@pytest.mark.parametrize(
    ("unowned", "refused"),
    [
        ("video-detect", step("scale_out", "detect", replicas=3)),
        ("video-detect", step("batch", "detect", batch_size=8)),
        ("video-detect", step("switch", "detect", variant="yolo_m")),
        ("video-detect-config", step("batch", "detect", batch_size=8)),
        ("video-detect-config", step("switch", "detect", variant="yolo_m")),
    ],
)
def test_objects_without_the_ownership_labels_are_never_written(
    fake_kube: FakeKubeHandle, api: client.ApiClient, unowned: str, refused: Step
) -> None:
    seed(fake_kube, api, edit=_unowned(unowned))
    before, since = snapshot(fake_kube), len(fake_kube.requests())
    with pytest.raises(TargetError, match=f"default/{unowned} exists but is not labelled as stage detect"):
        make_target().apply_step(SPEC, refused)
    assert writes(fake_kube, since) == []
    assert snapshot(fake_kube) == before


@NO_PODS
def test_a_batch_change_without_a_configmap_is_refused_but_a_switch_still_works(
    fake_kube: FakeKubeHandle, api: client.ApiClient
) -> None:
    seed(fake_kube, api)
    client.CoreV1Api(api).delete_namespaced_config_map("video-detect-config", NS)
    target, since = make_target(), len(fake_kube.requests())
    with pytest.raises(TargetError, match="cannot change without a restart"):
        target.apply_step(SPEC, step("batch", "detect", batch_size=8))
    assert writes(fake_kube, since) == []
    target.apply_step(SPEC, step("switch", "detect", variant="yolo_m", batch_size=8))
    assert writes(fake_kube, since) == [("PATCH", f"{DEP_PATH}/video-detect", 200)]
    assert target.read(SPEC)["detect"] == replace(CONFIG["detect"], variant="yolo_m", batch_size=8)


@NO_PODS
def test_a_configmap_the_pods_do_not_mount_is_neither_read_nor_written(
    fake_kube: FakeKubeHandle, api: client.ApiClient
) -> None:
    seed(fake_kube, api)
    # Someone replaced the pod template's volumes: the ConfigMap no longer reaches the pods.
    # (A JSON patch: a strategic merge would merge the new volume into the old one by name.)
    volume = {"name": "stage-config", "emptyDir": {}}
    body = [{"op": "replace", "path": "/spec/template/spec/volumes/0", "value": volume}]
    client.AppsV1Api(api).patch_namespaced_deployment("video-detect", NS, body)
    live_batch = {"data": {"batch_size": "16"}}
    client.CoreV1Api(api).patch_namespaced_config_map("video-detect-config", NS, live_batch)
    target, since = make_target(), len(fake_kube.requests())
    assert target.read(SPEC)["detect"].batch_size == CONFIG["detect"].batch_size  # the env the pods use
    with pytest.raises(TargetError, match="does not mount configmap video-detect-config"):
        target.apply_step(SPEC, step("batch", "detect", batch_size=8))
    assert writes(fake_kube, since) == []


# ----------------------------------------------------------------------------------------- retries


def scale_patches(fake_kube: FakeKubeHandle, stage: str = "detect") -> list[int]:
    return [s for m, p, s in writes(fake_kube) if p == f"{DEP_PATH}/video-{stage}/scale"]


@NO_PODS
def test_server_errors_and_conflicts_are_retried_with_backoff(
    fake_kube: FakeKubeHandle, api: client.ApiClient
) -> None:
    seed(fake_kube, api)
    slept: list[float] = []
    target = make_target(backoff_s=0.01, sleep=slept.append)
    fake_kube.fail_next("PATCH", f"{DEP_PATH}/video-detect/scale", status=500, times=2)
    target.apply_step(SPEC, step("scale_out", "detect", replicas=3))
    assert scale_patches(fake_kube) == [500, 500, 200]
    assert slept == [0.01, 0.02]
    fake_kube.fail_next("PATCH", f"{CM_PATH}/video-detect-config", status=409)
    target.apply_step(SPEC, step("batch", "detect", batch_size=4))
    assert [s for m, p, s in writes(fake_kube) if m == "PATCH" and "configmaps" in p] == [409, 200]
    assert target.read(SPEC)["detect"] == replace(CONFIG["detect"], replicas=3, batch_size=4)


@NO_PODS
def test_a_persistent_server_error_fails_after_the_attempts(
    fake_kube: FakeKubeHandle, api: client.ApiClient
) -> None:
    seed(fake_kube, api)
    fake_kube.fail_next("PATCH", f"{DEP_PATH}/video-detect/scale", status=503, times=100)
    with pytest.raises(TargetError) as failed:
        make_target(attempts=3).apply_step(SPEC, step("scale_out", "detect", replicas=3))
    assert str(failed.value).startswith(
        "scale deployment default/video-detect to 3 replicas: HTTP 503 Service Unavailable: injected failure"
    )
    assert str(failed.value).endswith("(gave up after 3 attempt(s))")
    assert scale_patches(fake_kube) == [503] * 3
    assert fake_kube.get(DEPLOYMENTS, "video-detect")["spec"]["replicas"] == 2


@NO_PODS
def test_a_forbidden_write_is_not_retried(fake_kube: FakeKubeHandle, api: client.ApiClient) -> None:
    seed(fake_kube, api)
    fake_kube.fail_next("PATCH", f"{DEP_PATH}/video-detect/scale", status=403, message="RBAC says no")
    with pytest.raises(TargetError, match=r"HTTP 403 Forbidden: RBAC says no \(not retried\)"):
        make_target().apply_step(SPEC, step("scale_out", "detect", replicas=3))
    assert scale_patches(fake_kube) == [403]


@NO_PODS
def test_a_response_slower_than_the_timeout_is_retried(
    fake_kube: FakeKubeHandle, api: client.ApiClient
) -> None:
    seed(fake_kube, api)
    fake_kube.fail_next("PATCH", f"{DEP_PATH}/video-detect/scale", status=0, delay_s=1.0)
    started = time.monotonic()
    make_target(request_timeout_s=0.2).apply_step(SPEC, step("scale_out", "detect", replicas=3))
    assert time.monotonic() - started < 0.9  # the second attempt did not wait for the slow first one
    # The abandoned first PATCH still lands later, as on a real server; it sets the same value.
    deadline = time.monotonic() + 5
    while len(scale_patches(fake_kube)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert scale_patches(fake_kube) == [200, 200]
    assert fake_kube.get(DEPLOYMENTS, "video-detect")["spec"]["replicas"] == 3


@NO_PODS
def test_responses_that_stay_slower_than_the_timeout_fail(
    fake_kube: FakeKubeHandle, api: client.ApiClient
) -> None:
    seed(fake_kube, api)
    fake_kube.fail_next("GET", DEP_PATH, status=0, delay_s=0.5, times=2)
    started = time.monotonic()
    with pytest.raises(
        TargetError, match=r"list deployments in namespace default: ReadTimeoutError.*2 attempt"
    ):
        make_target(request_timeout_s=0.2, attempts=2).read(SPEC)
    assert time.monotonic() - started < 1.0


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _use_server(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig.yaml", url)
    extra = {"kube_config_path": str(kubeconfig), "namespace": "ipa"}
    monkeypatch.setenv("AIRFLOW_CONN_IPA_KUBERNETES", json.dumps({"conn_type": "kubernetes", "extra": extra}))


def test_a_dead_server_fails_within_seconds_without_hidden_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _use_server(f"http://127.0.0.1:{_closed_port()}", tmp_path, monkeypatch)
    target = KubernetesTarget()  # the defaults: 4 attempts, 0.2 s backoff, real sleeps
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="urllib3"), pytest.raises(TargetError) as failed:
        target.apply_step(SPEC, step("scale_out", "detect", replicas=3))
    assert time.monotonic() - started < 10
    assert "read deployment ipa/video-detect: NewConnectionError" in str(failed.value)
    assert str(failed.value).endswith("(gave up after 4 attempt(s))")
    assert not [r for r in caplog.records if "Retrying" in r.getMessage()]  # urllib3's own retries are off
    assert target.name == "kubernetes namespace ipa (connection ipa_kubernetes)"


def test_a_server_that_never_answers_costs_attempts_times_the_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as listener:  # accepts connections (in the kernel's backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        _use_server(f"http://127.0.0.1:{listener.getsockname()[1]}", tmp_path, monkeypatch)
        started = time.monotonic()
        with pytest.raises(TargetError, match=r"ReadTimeoutError.*\(gave up after 3 attempt\(s\)\)"):
            KubernetesTarget(request_timeout_s=0.3, attempts=3, backoff_s=0.05).read(SPEC)
        assert 0.9 <= time.monotonic() - started < 2.5  # urllib3's retries would make it 4 x as long


def test_a_missing_connection_is_an_error_naming_it() -> None:
    target = KubernetesTarget("ipa_nowhere")
    with pytest.raises(TargetError, match="cannot read the Airflow connection 'ipa_nowhere'"):
        target.read(SPEC)
    assert "(connection ipa_nowhere)" in target.name


# ----------------------------------------------------------------------------------- apply_change

DESIRED = {
    "detect": replace(CONFIG["detect"], replicas=4),
    "classify": StageConfig("resnet50", batch_size=8, cores=2, replicas=1),
}
PLANNED_WRITES = [
    f"{DEP_PATH}/video-detect/scale",  # scale out first: capacity never dips
    f"{CM_PATH}/video-classify-config",  # the switch: its batch size ...
    f"{DEP_PATH}/video-classify",  # ... and its template
    f"{DEP_PATH}/video-classify/scale",  # scale in last
]


def apply(target: KubernetesTarget, desired: Any = DESIRED, **options: Any) -> Any:
    lines: list[str] = []
    options = {"ready_timeout_s": 5.0, "poll_s": 0.05, "log": lines.append, **options}
    return apply_change(target, SPEC, target.read(SPEC), desired, **options)


@NO_PODS
def test_apply_change_carries_out_the_steps_in_order_and_reads_them_back(
    fake_kube: FakeKubeHandle, api: client.ApiClient
) -> None:
    seed(fake_kube, api)
    since = len(fake_kube.requests())
    report = apply(make_target())
    assert report.status == "applied", report.message
    assert [(s.kind, s.stage) for s in report.steps] == [
        ("scale_out", "detect"),
        ("switch", "classify"),
        ("scale_in", "classify"),
    ]
    assert [p for _, p, _ in writes(fake_kube, since)] == PLANNED_WRITES
    assert report.running == DESIRED
    assert report.not_ready == ()
    assert make_target().read(SPEC) == DESIRED


@NO_PODS
def test_a_failing_step_is_rolled_back_to_exactly_what_ran(
    fake_kube: FakeKubeHandle, api: client.ApiClient
) -> None:
    seed(fake_kube, api)
    before = snapshot(fake_kube)
    fake_kube.fail_next("PATCH", f"{DEP_PATH}/video-classify", status=500, times=100)
    report = apply(make_target(attempts=2))
    assert report.status == "rolled_back", report.message
    assert [(s.kind, s.stage) for s in report.done] == [("scale_out", "detect")]
    assert "HTTP 500" in report.error
    assert "restored to 4" in report.error  # the switch undid its own ConfigMap write
    assert snapshot(fake_kube) == before  # replicas, env, cpu and batch sizes as they were
    assert report.running == CONFIG
    config_map_versions = [
        v["data"]["batch_size"] for v in fake_kube.history(CONFIG_MAPS, "video-classify-config")
    ]
    assert config_map_versions == ["4", "8", "4"]


@NO_PODS
def test_a_fault_that_also_breaks_the_rollback_is_reported_inconsistent(
    fake_kube: FakeKubeHandle, api: client.ApiClient
) -> None:
    seed(fake_kube, api)
    detect_scale = f"{DEP_PATH}/video-detect/scale"
    fake_kube.fail_next(
        "PATCH", detect_scale, status=0, delay_s=0.01
    )  # the first step passes (rules go in order)
    fake_kube.fail_next("PATCH", detect_scale, status=500, times=100)  # ... but its undo fails
    fake_kube.fail_next("PATCH", f"{DEP_PATH}/video-classify", status=500, times=100)  # the switch fails
    report = apply(make_target(attempts=2))
    assert report.status == "inconsistent"
    assert (
        "detect: scale out 2 -> 4 replicas: scale deployment default/video-detect to 2 replicas"
        in report.message
    )
    assert "it runs detect yolo_s batch 2 x4 (1 core(s) each); classify resnet18 batch 4 x3" in report.message
    assert report.running == {"detect": DESIRED["detect"], "classify": CONFIG["classify"]}


@NO_PODS
def test_an_unchanged_plan_or_a_dry_run_writes_nothing(
    fake_kube: FakeKubeHandle, api: client.ApiClient
) -> None:
    seed(fake_kube, api)
    since = len(fake_kube.requests())
    assert apply(make_target(), CONFIG).status == "unchanged"
    assert apply(make_target(), DESIRED, dry_run=True).status == "dry_run"
    assert writes(fake_kube, since) == []
    assert make_target().read(SPEC) == CONFIG


# --------------------------------------------------------------------------------------- readiness


@SLOW_STATUS
def test_not_ready_follows_the_controllers_status(fake_kube: FakeKubeHandle, api: client.ApiClient) -> None:
    seed(fake_kube, api, {"detect": CONFIG["detect"]})
    target = make_target()
    assert target.not_ready(SPEC, CONFIG) == [
        "classify: deployment video-classify not found in namespace default"
    ]
    target.apply_step(SPEC, step("scale_out", "detect", replicas=4))
    wanted = {"detect": replace(CONFIG["detect"], replicas=4)}
    assert target.not_ready(SPEC, wanted) == [
        "detect (deployment video-detect): generation 2 not yet observed by the controller (observed 1); "
        "2/4 updated, 2/4 ready, 2/4 available"
    ]
    deadline = time.monotonic() + 5
    while target.not_ready(SPEC, wanted) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert target.not_ready(SPEC, wanted) == []
    report = apply(target, {"detect": replace(CONFIG["detect"], replicas=5)}, ready_timeout_s=0.1)
    assert report.status == "applied"
    assert report.not_ready and report.not_ready[0].startswith(
        "detect (deployment video-detect): generation 3"
    )
