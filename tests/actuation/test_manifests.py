"""The objects a stage runs as (no server needed): names, labels, selector, env, CPU, the batch-size
ConfigMap and its mount; the refusals of :func:`stage_manifests`."""

from __future__ import annotations

from typing import Any

import pytest

from ipa_tasks.actuation.config import StageConfig
from ipa_tasks.actuation.manifests import (
    config_map_name,
    is_owned,
    label_value,
    owner_selector,
    stage_manifests,
    stage_object_name,
)
from ipa_tasks.spec import PipelineSpec, parse_spec


def _stage(name: str, variants: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "variants": [{"name": v, "model": {"kind": "reference", "uri": f"ref:{v}"}} for v in variants],
        "batch_sizes": [1, 2, 4, 8],
        "cores": [1, 2, 4],
        "replicas": {"min": 1, "max": 5},
    }


SPEC = parse_spec(
    {
        "name": "video",
        "sla_s": 2.0,
        "stages": [_stage("detect", ["yolo_s", "yolo_m"]), _stage("classify", ["resnet18", "resnet50"])],
    }
)
CONFIG = {
    "detect": StageConfig("yolo_s", batch_size=2, cores=1, replicas=2),
    "classify": StageConfig("resnet18", batch_size=4, cores=2, replicas=3),
}
IMAGE = "ipa-stage-server:test"
OWNER_LABELS = {"app.kubernetes.io/part-of": "ipa", "app.kubernetes.io/component": "stage-server"}


def spec_with_stages(*names: str, pipeline: str = "video") -> PipelineSpec:
    return parse_spec({"name": pipeline, "sla_s": 1.0, "stages": [_stage(n, ["v"]) for n in names]})


def objects_by_kind(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def test_each_stage_gets_a_configmap_then_its_deployment_in_pipeline_order() -> None:
    objects = stage_manifests(SPEC, CONFIG, image=IMAGE, namespace="ipa")
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [
        ("ConfigMap", "video-detect-config"),
        ("Deployment", "video-detect"),
        ("ConfigMap", "video-classify-config"),
        ("Deployment", "video-classify"),
    ]
    assert {o["metadata"]["namespace"] for o in objects} == {"ipa"}
    only_detect = stage_manifests(SPEC, {"detect": CONFIG["detect"]}, image=IMAGE, namespace="ipa")
    assert [o["metadata"]["name"] for o in only_detect] == ["video-detect-config", "video-detect"]


def test_the_deployment_runs_one_stage_server_with_the_stage_config() -> None:
    objects = objects_by_kind(stage_manifests(SPEC, CONFIG, image=IMAGE, namespace="ipa"))
    deployment = objects["Deployment", "video-classify"]
    labels = {**OWNER_LABELS, "ipa/pipeline": "video", "ipa/stage": "classify"}
    assert deployment["metadata"]["labels"] == labels
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["selector"] == {
        "matchLabels": {"ipa/pipeline": "video", "ipa/stage": "classify"}
    }
    template = deployment["spec"]["template"]
    assert template["metadata"]["labels"] == labels
    assert template["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8000",
    }
    (container,) = template["spec"]["containers"]
    assert container["name"] == "stage-server"
    assert container["image"] == IMAGE
    assert {e["name"]: e["value"] for e in container["env"]} == {
        "IPA_PIPELINE": "video",
        "IPA_STAGE": "classify",
        "IPA_VARIANT": "resnet18",
        "IPA_THREADS": "2",
        "IPA_BATCH_SIZE": "4",
        "IPA_BATCH_SIZE_FILE": "/etc/ipa/stage/batch_size",
        "IPA_HOST": "0.0.0.0",
        "IPA_PORT": "8000",
    }
    assert container["resources"] == {"requests": {"cpu": "2"}, "limits": {"cpu": "2"}}
    assert container["ports"] == [{"name": "http", "containerPort": 8000}]
    # The stage server's own endpoints: ready after its model is loaded, alive while it answers.
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    # A rollout never removes an old pod before its replacement is ready.
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


def test_the_batch_size_configmap_is_mounted_read_only_where_the_env_points() -> None:
    objects = objects_by_kind(stage_manifests(SPEC, CONFIG, image=IMAGE, namespace="ipa"))
    config_map = objects["ConfigMap", "video-detect-config"]
    assert config_map["data"] == {"batch_size": "2"}
    assert config_map["metadata"]["labels"] == {
        **OWNER_LABELS,
        "ipa/pipeline": "video",
        "ipa/stage": "detect",
    }
    pod = objects["Deployment", "video-detect"]["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "stage-config", "configMap": {"name": "video-detect-config"}}]
    (mount,) = pod["containers"][0]["volumeMounts"]
    assert mount == {"name": "stage-config", "mountPath": "/etc/ipa/stage", "readOnly": True}
    assert all(is_owned(o, "video", "detect") for o in (config_map, objects["Deployment", "video-detect"]))
    assert not is_owned(config_map, "video", "classify")
    assert not is_owned({"metadata": {"name": "video-detect"}}, "video", "detect")


@pytest.mark.parametrize(
    ("pipeline", "stage", "expected"),
    [
        ("video", "detect", "video-detect"),
        ("video", "Crop_Stage 1", "video-crop-stage-1"),
        ("nlp", "--trans--", "nlp-trans"),
        ("p", "x" * 80, "p-" + "x" * 61),
        ("p", "x" * 60 + "_yz", "p-" + "x" * 60),  # cut at 63, no trailing dash
    ],
)
def test_object_names_are_dns_labels(pipeline: str, stage: str, expected: str) -> None:
    name = stage_object_name(pipeline, stage)
    assert name == expected
    assert len(name) <= 63
    assert config_map_name(pipeline, stage) == f"{expected}-config"


def test_free_text_stage_names_become_valid_label_values() -> None:
    spec = spec_with_stages("Crop Stage")
    (_config_map, deployment) = stage_manifests(
        spec, {"Crop Stage": CONFIG["detect"]}, image=IMAGE, namespace="ipa"
    )
    assert deployment["metadata"]["labels"]["ipa/stage"] == label_value("Crop Stage") == "Crop-Stage"
    assert deployment["metadata"]["name"] == "video-crop-stage"
    env = {e["name"]: e["value"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["IPA_STAGE"] == "Crop Stage"  # the server gets the stage's real name
    assert owner_selector("video") == "app.kubernetes.io/part-of=ipa,ipa/pipeline=video"


def test_unknown_stages_and_name_clashes_are_refused() -> None:
    with pytest.raises(ValueError, match="no stage"):
        stage_manifests(SPEC, {"track": CONFIG["detect"]}, image=IMAGE, namespace="ipa")
    clash = spec_with_stages("crop_a", "crop-a")
    with pytest.raises(ValueError, match="'crop_a' and 'crop-a' would both be named 'video-crop-a'"):
        stage_manifests(clash, {"crop_a": CONFIG["detect"]}, image=IMAGE, namespace="ipa")
