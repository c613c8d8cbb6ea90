"""Pure pod helpers of the fake kubelet: QoS class, the process argv and env, and status documents.

The container's ``command`` + ``args`` run as a local process: ``python``/``python3`` (any path or
minor version) maps to the server's own interpreter, so a pod command written for the project's image
runs against the project's virtualenv; anything else is looked up on the pod's ``PATH``.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import sys
from collections.abc import Mapping
from typing import Any

from ipa_tasks.fake_kube_api.objects import NODE_NAME, condition, metadata, rfc3339, spec

_PYTHON = re.compile(r"python(3(\.\d+)?)?")
_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")

# What an image's Dockerfile typically sets; a container's `env` still overrides it.
IMAGE_ENV: dict[str, str] = {"PYTHONUNBUFFERED": "1"}


class ContainerConfigError(Exception):
    """The container's env cannot be built (the kubelet's CreateContainerConfigError)."""


def qos_class(pod_spec: Mapping[str, Any]) -> str:
    """Kubernetes QoS class from the containers' requests/limits."""
    containers = list(pod_spec.get("containers") or []) + list(pod_spec.get("initContainers") or [])
    resources = [c.get("resources") or {} for c in containers]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    for res in resources:
        limits, requests = res.get("limits") or {}, res.get("requests") or {}
        if not {"cpu", "memory"} <= set(limits):
            return "Burstable"
        if any(requests.get(name, limits[name]) != limits[name] for name in ("cpu", "memory")):
            return "Burstable"
    return "Guaranteed"


def expand_refs(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion in command/args/env values (``$$`` escapes, unknown stay)."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _VAR_REF.sub(replace, text)


def resolve_argv(container: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """The local argv for a container (empty when neither command nor args are given)."""
    command = [expand_refs(str(part), env) for part in container.get("command") or []]
    args = [expand_refs(str(part), env) for part in container.get("args") or []]
    # Without `command`, the image's entrypoint would run with `args`; the fake has no image, so the
    # args are the whole command line (right for images without an ENTRYPOINT).
    argv = command + args if command else args
    if not argv:
        return []
    executable = argv[0]
    if _PYTHON.fullmatch(os.path.basename(executable)):
        return [sys.executable, *argv[1:]]
    found = shutil.which(executable, path=env.get("PATH"))
    return [found or executable, *argv[1:]]


def _field_ref(pod: Mapping[str, Any], path: str) -> str:
    meta = metadata(pod)
    if match := re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path):
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec(pod).get("nodeName") or NODE_NAME,
        "spec.serviceAccountName": spec(pod).get("serviceAccountName") or "default",
        "status.podIP": (pod.get("status") or {}).get("podIP"),
        "status.hostIP": "127.0.0.1",
    }
    return str(simple.get(path) or "")


def _data_of(source: Mapping[str, Any] | None, secret: bool) -> dict[str, str]:
    if source is None:
        return {}
    if secret:
        decoded = {k: base64.b64decode(v).decode() for k, v in (source.get("data") or {}).items()}
        return {**decoded, **(source.get("stringData") or {})}
    return dict(source.get("data") or {})


def container_env(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    base: Mapping[str, str],
    config_maps: Mapping[str, Mapping[str, Any]],
    secrets: Mapping[str, Mapping[str, Any]],
) -> dict[str, str]:
    """The process environment: ``base`` + image defaults + the container's ``envFrom`` and ``env``."""
    env = {**base, **IMAGE_ENV, "HOSTNAME": str(metadata(pod).get("name", ""))}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, store, secret in (("configMapRef", config_maps, False), ("secretRef", secrets, True)):
            if ref := source.get(kind):
                found = store.get(ref.get("name", ""))
                if found is None and not ref.get("optional"):
                    raise ContainerConfigError(f'{kind[:-3].lower()} "{ref.get("name")}" not found')
                env.update({prefix + k: v for k, v in _data_of(found, secret).items()})
    for var in container.get("env") or []:
        name = var["name"]
        if "value" in var:
            env[name] = expand_refs(str(var["value"]), env)
            continue
        source = var.get("valueFrom") or {}
        if ref := source.get("fieldRef"):
            env[name] = _field_ref(pod, ref.get("fieldPath", ""))
        for kind, store, secret in (("configMapKeyRef", config_maps, False), ("secretKeyRef", secrets, True)):
            if ref := source.get(kind):
                data = _data_of(store.get(ref.get("name", "")), secret)
                if ref.get("key") in data:
                    env[name] = data[ref["key"]]
                elif not ref.get("optional"):
                    raise ContainerConfigError(f"couldn't find key {ref.get('key')} in {ref.get('name')}")
    return env


def scheduled_status(pod: Mapping[str, Any]) -> dict[str, Any]:
    status = dict(pod.get("status") or {})
    status.update(phase="Pending", conditions=[condition("PodScheduled", True)])
    return status


def _container_status(
    container: Mapping[str, Any], state: dict[str, Any], *, ready: bool, container_id: str | None = None
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "name": container["name"],
        "image": container.get("image", ""),
        "imageID": f"fake-image://{container.get('image', '')}",
        "ready": ready,
        "started": "running" in state,
        "restartCount": 0,
        "state": state,
        "lastState": {},
    }
    if container_id:
        status["containerID"] = container_id
    return status


def _init_statuses(pod: Mapping[str, Any], started_at: str) -> list[dict[str, Any]]:
    # Init containers are not run; they are reported as having completed right away.
    done = {
        "terminated": {
            "exitCode": 0,
            "reason": "Completed",
            "startedAt": started_at,
            "finishedAt": started_at,
        }
    }
    return [_container_status(c, done, ready=True) for c in spec(pod).get("initContainers") or []]


def running_status(pod: Mapping[str, Any], pod_ip: str, started_at: str, container_id: str) -> dict[str, Any]:
    """Status of a pod whose first container's process runs (the others are reported running too)."""
    containers = spec(pod).get("containers") or []
    state = {"running": {"startedAt": started_at}}
    status = dict(pod.get("status") or {})
    status.update(
        phase="Running",
        hostIP="127.0.0.1",
        hostIPs=[{"ip": "127.0.0.1"}],
        podIP=pod_ip,
        podIPs=[{"ip": pod_ip}],
        startTime=status.get("startTime", started_at),
        conditions=[
            condition("PodReadyToStartContainers", True),
            condition("Initialized", True),
            condition("Ready", True),
            condition("ContainersReady", True),
            condition("PodScheduled", True),
        ],
        containerStatuses=[
            _container_status(c, state, ready=True, container_id=container_id if i == 0 else None)
            for i, c in enumerate(containers)
        ],
    )
    if spec(pod).get("initContainers"):
        status["initContainerStatuses"] = _init_statuses(pod, started_at)
    return status


def terminated_status(
    pod: Mapping[str, Any],
    *,
    pod_ip: str,
    started_at: str,
    exit_code: int,
    reason: str,
    message: str | None,
    container_id: str | None,
) -> dict[str, Any]:
    """Final status: the first container's exit code decides the phase, the others exit with 0."""
    finished_at = rfc3339()
    containers = spec(pod).get("containers") or []
    phase = "Succeeded" if exit_code == 0 else "Failed"
    pod_reason = "PodCompleted" if exit_code == 0 else "PodFailed"
    statuses = []
    for i, container in enumerate(containers):
        code, why = (exit_code, reason) if i == 0 else (0, "Completed")
        terminated: dict[str, Any] = {
            "exitCode": code,
            "reason": why,
            "startedAt": started_at,
            "finishedAt": finished_at,
        }
        if i == 0 and message:
            terminated["message"] = message
        if i == 0 and container_id:
            terminated["containerID"] = container_id
        state = {"terminated": terminated}
        statuses.append(
            _container_status(container, state, ready=False, container_id=terminated.get("containerID"))
        )
    status = dict(pod.get("status") or {})
    status.update(
        phase=phase,
        hostIP="127.0.0.1",
        hostIPs=[{"ip": "127.0.0.1"}],
        podIP=pod_ip,
        podIPs=[{"ip": pod_ip}],
        startTime=status.get("startTime", started_at),
        conditions=[
            condition("PodReadyToStartContainers", False),
            condition("Initialized", True, "PodCompleted"),
            condition("Ready", False, pod_reason),
            condition("ContainersReady", False, pod_reason),
            condition("PodScheduled", True),
        ],
        containerStatuses=statuses,
    )
    if spec(pod).get("initContainers"):
        status["initContainerStatuses"] = _init_statuses(pod, started_at)
    return status


def waiting_status(pod: Mapping[str, Any], reason: str, message: str) -> dict[str, Any]:
    """A pod stuck before its containers start (e.g. CreateContainerConfigError): stays Pending."""
    containers = spec(pod).get("containers") or []
    state = {"waiting": {"reason": reason, "message": message}}
    status = dict(pod.get("status") or {})
    status.update(
        phase="Pending",
        conditions=[condition("PodScheduled", True), condition("Ready", False, "ContainersNotReady")],
        containerStatuses=[_container_status(c, state, ready=False) for c in containers],
    )
    return status
