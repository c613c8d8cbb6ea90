"""The Kubernetes objects one pipeline stage runs as: a Deployment of stage servers and a ConfigMap that
carries the stage's live batch size.

:func:`stage_manifests` builds them for a whole configuration. They are what the Helm chart installs (it
mirrors this module), what tests and the demo seed a cluster with, and the shape
:class:`~.kubernetes.KubernetesTarget` reads and patches. Per stage, named by :func:`stage_object_name`:

* a **Deployment** ``<pipeline>-<stage>``, one container ``stage-server`` whose environment says what it
  serves (``IPA_VARIANT``, ``IPA_THREADS`` = cores, ``IPA_BATCH_SIZE``), CPU request = limit = cores (a
  replica gets exactly the cores it was profiled with), scraped by Prometheus on port 8000;
* a **ConfigMap** ``<pipeline>-<stage>-config`` with the key ``batch_size``, mounted read-only at
  ``/etc/ipa/stage`` (``IPA_BATCH_SIZE_FILE`` names the file).

Why the batch size lives in a ConfigMap: changing a variable of the pod template restarts every pod of
the Deployment, and a batch-size change needs no new model. The kubelet rewrites a mounted ConfigMap in
place (not when it is mounted with ``subPath``), so a batch-only change is one ConfigMap write and no
restart. The stage server re-reads the file, and the file wins over ``IPA_BATCH_SIZE``, which is only the
value a pod starts with. The kubelet's refresh is not instant: it can take the kubelet's sync period
(one minute by default) plus its ConfigMap cache's propagation delay, so running pods may batch with the
old size for a minute or so after the write (``read`` reports the new size at once).
A variant or core change rewrites the template too and is a rolling restart on purpose (the model server
loads its variant at start-up); the rollout keeps every old pod until its replacement is ready
(``maxUnavailable: 0``), so capacity does not dip while a switch lands.

Every object carries the ownership labels (:func:`stage_labels`); the target never touches an object
without them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ipa_tasks.actuation.config import StageConfig
from ipa_tasks.spec import PipelineSpec

PART_OF, COMPONENT = "app.kubernetes.io/part-of", "app.kubernetes.io/component"
PIPELINE_LABEL, STAGE_LABEL = "ipa/pipeline", "ipa/stage"
PART_OF_VALUE, COMPONENT_VALUE = "ipa", "stage-server"
CONTAINER = "stage-server"
CONFIG_VOLUME = "stage-config"
CONFIG_MOUNT = "/etc/ipa/stage"
BATCH_KEY = "batch_size"
BATCH_FILE = f"{CONFIG_MOUNT}/{BATCH_KEY}"
METRICS_PORT = 8000
ENV_PIPELINE, ENV_STAGE, ENV_VARIANT = "IPA_PIPELINE", "IPA_STAGE", "IPA_VARIANT"
ENV_BATCH, ENV_THREADS, ENV_BATCH_FILE = "IPA_BATCH_SIZE", "IPA_THREADS", "IPA_BATCH_SIZE_FILE"

_MAX_NAME = 63  # a DNS-1123 label; Deployment names end up in pod names and label values
_NOT_DNS = re.compile(r"[^a-z0-9]+")
_NOT_LABEL = re.compile(r"[^A-Za-z0-9_.-]+")


def stage_object_name(pipeline: str, stage: str) -> str:
    """``<pipeline>-<stage>`` as a DNS-1123 label: lower case, other characters -> ``-``, at most 63."""
    name = _NOT_DNS.sub("-", f"{pipeline}-{stage}".lower()).strip("-")
    return name[:_MAX_NAME].rstrip("-")


def config_map_name(pipeline: str, stage: str) -> str:
    return f"{stage_object_name(pipeline, stage)}-config"


def label_value(text: str) -> str:
    """``text`` as a valid label value (stage names are free text in a spec; label values are not)."""
    value = _NOT_LABEL.sub("-", text)[:_MAX_NAME]
    return value.strip("-_.")


def owner_selector(pipeline: str) -> str:
    """The label selector of every object this project owns for ``pipeline``."""
    return f"{PART_OF}={PART_OF_VALUE},{PIPELINE_LABEL}={label_value(pipeline)}"


def stage_labels(pipeline: str, stage: str) -> dict[str, str]:
    return {
        PART_OF: PART_OF_VALUE,
        COMPONENT: COMPONENT_VALUE,
        PIPELINE_LABEL: label_value(pipeline),
        STAGE_LABEL: label_value(stage),
    }


def selector_labels(pipeline: str, stage: str) -> dict[str, str]:
    """What the Deployment selects its pods by (immutable once created, so only the stable labels)."""
    return {PIPELINE_LABEL: label_value(pipeline), STAGE_LABEL: label_value(stage)}


def is_owned(obj: Mapping[str, Any], pipeline: str, stage: str) -> bool:
    """Whether an object (as the API returns it) carries this project's labels for this stage."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    wanted = {PART_OF: PART_OF_VALUE, PIPELINE_LABEL: label_value(pipeline), STAGE_LABEL: label_value(stage)}
    return all(labels.get(key) == value for key, value in wanted.items())


def mounts_config_map(deployment: Mapping[str, Any], pipeline: str, stage: str) -> bool:
    """Whether the Deployment's ``stage-server`` container mounts the stage's ConfigMap where the server
    reads its batch size: only then does a change of the ConfigMap reach the pods."""
    pod_spec = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    wanted = config_map_name(pipeline, stage)
    volumes = {
        volume.get("name")
        for volume in pod_spec.get("volumes") or []
        if (volume.get("configMap") or {}).get("name") == wanted
    }
    for container in pod_spec.get("containers") or []:
        if container.get("name") == CONTAINER:
            mounts = container.get("volumeMounts") or []
            return any(m.get("name") in volumes and m.get("mountPath") == CONFIG_MOUNT for m in mounts)
    return False


def cpu_quantity(cores: int) -> str:
    return str(cores)


def stage_env(pipeline: str, stage: str, config: StageConfig) -> list[dict[str, str]]:
    return [
        {"name": ENV_PIPELINE, "value": pipeline},
        {"name": ENV_STAGE, "value": stage},
        *variable_env(config),
        {"name": ENV_BATCH_FILE, "value": BATCH_FILE},
        # The stage server listens on loopback unless told otherwise; in a pod it must take the pod's IP.
        {"name": "IPA_HOST", "value": "0.0.0.0"},
        {"name": "IPA_PORT", "value": str(METRICS_PORT)},
    ]


def variable_env(config: StageConfig) -> list[dict[str, str]]:
    """The variables a switch rewrites (merged by name into the running container)."""
    return [
        {"name": ENV_VARIANT, "value": config.variant},
        {"name": ENV_THREADS, "value": str(config.cores)},
        {"name": ENV_BATCH, "value": str(config.batch_size)},
    ]


def cpu_resources(cores: int) -> dict[str, dict[str, str]]:
    # Requests equal to limits: a replica neither borrows idle cores nor is throttled below its profile.
    return {"requests": {"cpu": cpu_quantity(cores)}, "limits": {"cpu": cpu_quantity(cores)}}


def config_map_manifest(pipeline: str, stage: str, config: StageConfig, *, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": config_map_name(pipeline, stage),
            "namespace": namespace,
            "labels": stage_labels(pipeline, stage),
        },
        "data": {BATCH_KEY: str(config.batch_size)},
    }


def deployment_manifest(
    pipeline: str, stage: str, config: StageConfig, *, image: str, namespace: str
) -> dict[str, Any]:
    labels = stage_labels(pipeline, stage)
    container = {
        "name": CONTAINER,
        "image": image,
        "env": stage_env(pipeline, stage, config),
        "resources": cpu_resources(config.cores),
        "ports": [{"name": "http", "containerPort": METRICS_PORT}],
        "volumeMounts": [{"name": CONFIG_VOLUME, "mountPath": CONFIG_MOUNT, "readOnly": True}],
        # Ready once the model is loaded and warmed up (the stage server's /readyz), so a rollout keeps
        # the old pod until its replacement can serve; alive as long as the process answers.
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 2},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10},
    }
    annotations = {"prometheus.io/scrape": "true", "prometheus.io/port": str(METRICS_PORT)}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": stage_object_name(pipeline, stage), "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": config.replicas,
            "selector": {"matchLabels": selector_labels(pipeline, stage)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": dict(labels), "annotations": annotations},
                "spec": {
                    "containers": [container],
                    "volumes": [
                        {"name": CONFIG_VOLUME, "configMap": {"name": config_map_name(pipeline, stage)}}
                    ],
                },
            },
        },
    }


def stage_manifests(
    spec: PipelineSpec, config: Mapping[str, StageConfig], *, image: str, namespace: str
) -> list[dict[str, Any]]:
    """Per stage of ``config`` (in pipeline order): its ConfigMap, then its Deployment (which mounts it).

    Raises ``ValueError`` for a stage the spec does not have, or two stages whose names map to the same
    object name.
    """
    unknown = sorted(set(config) - set(spec.stage_names))
    if unknown:
        raise ValueError(f"pipeline {spec.name!r} has no stage(s) {', '.join(unknown)}")
    names: dict[str, str] = {}
    for stage in spec.stage_names:
        name = stage_object_name(spec.name, stage)
        if name in names:
            raise ValueError(f"stages {names[name]!r} and {stage!r} would both be named {name!r}")
        names[name] = stage
    objects: list[dict[str, Any]] = []
    for stage in spec.stage_names:
        if stage in config:
            objects.append(config_map_manifest(spec.name, stage, config[stage], namespace=namespace))
            objects.append(
                deployment_manifest(spec.name, stage, config[stage], image=image, namespace=namespace)
            )
    return objects
