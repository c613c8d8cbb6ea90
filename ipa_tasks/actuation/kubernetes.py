"""The Kubernetes target: reads and changes the stage Deployments and ConfigMaps of one namespace through
the cncf-kubernetes provider's ``KubernetesHook`` (an Airflow connection, ``ipa_kubernetes`` by default).

The objects are the ones :mod:`.manifests` describes (installed by the Helm chart). This target only
changes them, one :class:`~.config.Step` at a time, and with the smallest write that does the step:

* ``scale_out``/``scale_in``: a PATCH of the ``deployments/scale`` subresource, nothing else;
* ``batch``: a PATCH of the stage's ConfigMap only; the Deployment is not written, so no pod restarts
  (the kubelet refreshes the mounted file, see :mod:`.manifests` for the delay);
* ``switch``: the ConfigMap's batch size, then a strategic-merge PATCH of the container ``stage-server``
  (merged by name: other containers and fields stay) with the new variables and CPU: a rolling restart,
  as a new variant needs. If the second write fails, the first is undone before the step fails, so a
  failed step leaves the stage as it was and :func:`~.target.apply_change` only undoes completed steps.

It never creates or deletes anything (installing and removing a pipeline is the chart's business), and
never writes an object that lacks the ownership labels: every write is preceded by a read of the object
and a label check. Every call has a client-side timeout and is retried (:mod:`.retries`); urllib3's own
retries are switched off so that ``attempts x request_timeout_s`` bounds how long a dead API server
keeps a step waiting.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from kubernetes.client import ApiClient, AppsV1Api, CoreV1Api, rest
from kubernetes.client.exceptions import ApiException

from ipa_tasks.actuation.config import StageConfig, Step, step_problem
from ipa_tasks.actuation.manifests import (
    BATCH_KEY,
    CONFIG_MOUNT,
    CONTAINER,
    ENV_BATCH,
    ENV_THREADS,
    ENV_VARIANT,
    STAGE_LABEL,
    config_map_name,
    cpu_resources,
    is_owned,
    label_value,
    mounts_config_map,
    owner_selector,
    stage_object_name,
    variable_env,
)
from ipa_tasks.actuation.retries import Sleep, call_with_retries
from ipa_tasks.actuation.target import TargetError
from ipa_tasks.kubernetes_connection import KUBERNETES_CONNECTION
from ipa_tasks.spec import PipelineSpec

if TYPE_CHECKING:
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

T = TypeVar("T")
Obj = dict[str, Any]

STRATEGIC_MERGE = "application/strategic-merge-patch+json"
MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True)
class _Clients:
    api: ApiClient
    apps: AppsV1Api
    core: CoreV1Api


class KubernetesTarget:
    """A pipeline's stages in one namespace, reached through the Airflow connection ``conn_id``.

    ``namespace``: the argument, else the connection's ``namespace`` extra, else ``default``. Each API
    call times out after ``request_timeout_s`` and is tried up to ``attempts`` times, waiting
    ``backoff_s``, then twice as long ... in between (``sleep`` is injectable for tests). The hook and
    its client are created on first use (so a target can be built where no connection can be read yet,
    e.g. while Airflow parses a DAG) and then reused.
    """

    def __init__(
        self,
        conn_id: str = KUBERNETES_CONNECTION,
        *,
        namespace: str | None = None,
        request_timeout_s: float = 5.0,
        attempts: int = 4,
        backoff_s: float = 0.2,
        sleep: Sleep = time.sleep,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {attempts}")
        self.conn_id = conn_id
        self.request_timeout_s = request_timeout_s
        self.attempts = attempts
        self.backoff_s = backoff_s
        self._sleep = sleep
        self._namespace = namespace
        self._hook: KubernetesHook | None = None
        self._clients: _Clients | None = None

    # ------------------------------------------------------------------------------ connection

    @property
    def namespace(self) -> str:
        if self._namespace is None:
            self._namespace = self._get_hook().get_namespace() or "default"
        return self._namespace

    @property
    def name(self) -> str:
        try:
            namespace = self.namespace
        except TargetError:
            namespace = "(unknown: the connection cannot be read)"
        return f"kubernetes namespace {namespace} (connection {self.conn_id})"

    def _get_hook(self) -> KubernetesHook:
        if self._hook is None:
            # Imported on first use: the provider loads Airflow (seconds), which building a target or
            # rendering manifests does not need.
            from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

            hook = KubernetesHook(conn_id=self.conn_id)
            try:
                hook.get_namespace()  # reads the connection: fail here, naming it, if it is missing
            except Exception as exc:  # the provider and the secrets backends raise many kinds
                raise TargetError(f"cannot read the Airflow connection {self.conn_id!r}: {exc}") from exc
            self._hook = hook
        return self._hook

    def _connect(self) -> _Clients:
        if self._clients is None:
            hook = self._get_hook()
            try:
                api = hook.api_client
            except Exception as exc:  # kubeconfig / in-cluster config problems, of several types
                raise TargetError(
                    f"cannot build a Kubernetes client from the connection {self.conn_id!r}: {exc}"
                ) from exc
            _without_pool_retries(api)
            self._clients = _Clients(api, hook.apps_v1_client, hook.core_v1_client)
        return self._clients

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        def attempt() -> T:
            return fn(*args, _request_timeout=self.request_timeout_s, **kwargs)

        return call_with_retries(
            attempt, what=what, attempts=self.attempts, backoff_s=self.backoff_s, sleep=self._sleep
        )

    def _read_optional(self, what: str, fn: Callable[..., Any], name: str) -> Obj | None:
        """GET one object as a dict (as the API returns it), or None if it does not exist."""

        def attempt(**kwargs: Any) -> Any:
            try:
                return fn(name, self.namespace, **kwargs)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise

        found = self._call(what, attempt)
        return None if found is None else self._to_dict(found)

    def _list_owned(self, what: str, fn: Callable[..., Any], spec: PipelineSpec) -> dict[str, Obj]:
        """name -> object, of the objects labelled as this pipeline's (never unlabelled ones)."""
        found = self._call(what, fn, self.namespace, label_selector=owner_selector(spec.name))
        items = [self._to_dict(item) for item in found.items or []]
        return {item["metadata"]["name"]: item for item in items}

    def _to_dict(self, model: Any) -> Obj:
        return self._connect().api.sanitize_for_serialization(model)

    # -------------------------------------------------------------------------------- reading

    def read(self, spec: PipelineSpec) -> dict[str, StageConfig]:
        clients = self._connect()
        where = f"in namespace {self.namespace}"
        deployments = self._list_owned(
            f"list deployments {where}", clients.apps.list_namespaced_deployment, spec
        )
        config_maps = self._list_owned(
            f"list configmaps {where}", clients.core.list_namespaced_config_map, spec
        )
        running: dict[str, StageConfig] = {}
        for stage in spec.stage_names:
            deployment = deployments.get(stage_object_name(spec.name, stage))
            if deployment is None:
                continue
            config_map = config_maps.get(config_map_name(spec.name, stage))
            if not mounts_config_map(deployment, spec.name, stage):
                config_map = None  # the pods never see it: they batch as their environment says
            running[stage] = self._stage_config(stage, deployment, config_map)
        return running

    def _stage_config(self, stage: str, deployment: Obj, config_map: Obj | None) -> StageConfig:
        where = self._where("deployment", deployment)
        _check_stage_label(stage, deployment, where)
        env = _container_env(_stage_container(deployment, where), where)
        batch_source: tuple[str, str, Any] = (where, f"env {ENV_BATCH}", env.get(ENV_BATCH))
        if config_map is not None:
            cm_where = self._where("configmap", config_map)
            _check_stage_label(stage, config_map, cm_where)
            data = config_map.get("data") or {}
            if BATCH_KEY in data:
                batch_source = (cm_where, f"data.{BATCH_KEY}", data[BATCH_KEY])
        variant = env.get(ENV_VARIANT)
        if not variant:
            raise TargetError(f"{where}: container {CONTAINER}: env {ENV_VARIANT} is missing or empty")
        return StageConfig(
            variant=str(variant),
            batch_size=_integer(*batch_source, minimum=1),
            cores=_integer(
                where, f"container {CONTAINER}: env {ENV_THREADS}", env.get(ENV_THREADS), minimum=1
            ),
            replicas=_integer(
                where, "spec.replicas", (deployment.get("spec") or {}).get("replicas"), minimum=0
            ),
        )

    def _where(self, kind: str, obj: Obj) -> str:
        return f"{kind} {self.namespace}/{obj['metadata']['name']}"

    def not_ready(self, spec: PipelineSpec, config: Mapping[str, StageConfig]) -> list[str]:
        deployments = self._list_owned(
            f"list deployments in namespace {self.namespace}",
            self._connect().apps.list_namespaced_deployment,
            spec,
        )
        lines = []
        for stage, wanted in config.items():
            name = stage_object_name(spec.name, stage)
            deployment = deployments.get(name)
            if deployment is None:
                lines.append(f"{stage}: deployment {name} not found in namespace {self.namespace}")
            elif problems := _rollout_problems(deployment, wanted.replicas):
                lines.append(f"{stage} (deployment {name}): {'; '.join(problems)}")
        return lines

    # -------------------------------------------------------------------------------- changing

    def apply_step(self, spec: PipelineSpec, step: Step) -> None:
        self._check_step(spec, step)  # everything that needs no request, before any request
        deployment = self._owned_deployment(spec, step.stage)
        if step.kind in ("scale_out", "scale_in"):
            self._scale(deployment, step.after.replicas)
        elif step.kind == "batch":
            if not mounts_config_map(deployment, spec.name, step.stage):
                raise TargetError(
                    f"{self._where('deployment', deployment)} does not mount configmap "
                    f"{config_map_name(spec.name, step.stage)} at {CONFIG_MOUNT}, so a batch-size change "
                    "would not reach its pods; refusing it (install the chart's Deployment)"
                )
            config_map = self._owned_config_map(spec, step.stage, required=True)
            assert config_map is not None
            self._set_batch(config_map, str(step.after.batch_size))
        elif step.kind == "switch":
            self._switch(spec, step, deployment)
        else:
            raise TargetError(f"{self.name}: unknown step kind {step.kind!r}")

    def remove(self, spec: PipelineSpec, stage: str) -> None:
        raise TargetError(
            f"{self.name}: this target never deletes a stage; stage {stage} of {spec.name} stays deployed "
            "(uninstall the Helm chart or delete its objects to remove it)"
        )

    def _check_step(self, spec: PipelineSpec, step: Step) -> None:
        problem = step_problem(spec, step)
        if problem:
            raise TargetError(problem)
        if step.kind == "create":
            self._refuse_create(spec, step.stage)

    def _refuse_create(self, spec: PipelineSpec, stage: str) -> None:
        name = stage_object_name(spec.name, stage)
        raise TargetError(
            f"stage {stage} of {spec.name} is not deployed in namespace {self.namespace}; install the Helm "
            f"chart or apply `stage_manifests` (deployment {name}, configmap "
            f"{config_map_name(spec.name, stage)}) first: this target changes running stages, it never "
            "creates them"
        )

    def _owned_deployment(self, spec: PipelineSpec, stage: str) -> Obj:
        name = stage_object_name(spec.name, stage)
        deployment = self._read_optional(
            f"read deployment {self.namespace}/{name}", self._connect().apps.read_namespaced_deployment, name
        )
        if deployment is None:
            self._refuse_create(spec, stage)
        assert deployment is not None
        self._require_owned(spec, stage, deployment, "deployment")
        return deployment

    def _owned_config_map(self, spec: PipelineSpec, stage: str, *, required: bool) -> Obj | None:
        name = config_map_name(spec.name, stage)
        config_map = self._read_optional(
            f"read configmap {self.namespace}/{name}", self._connect().core.read_namespaced_config_map, name
        )
        if config_map is None:
            if not required:
                return None
            raise TargetError(
                f"configmap {self.namespace}/{name} of stage {stage} does not exist, so its batch size "
                "cannot change without a restart; install the Helm chart or apply `stage_manifests`"
            )
        self._require_owned(spec, stage, config_map, "configmap")
        return config_map

    def _require_owned(self, spec: PipelineSpec, stage: str, obj: Obj, kind: str) -> None:
        if not is_owned(obj, spec.name, stage):
            labels = (obj.get("metadata") or {}).get("labels") or {}
            raise TargetError(
                f"{self._where(kind, obj)} exists but is not labelled as stage {stage} of {spec.name} "
                f"(labels: {labels or 'none'}, selector {owner_selector(spec.name)}); not touching it"
            )

    def _scale(self, deployment: Obj, replicas: int) -> None:
        name = deployment["metadata"]["name"]
        self._call(
            f"scale deployment {self.namespace}/{name} to {replicas} replicas",
            self._connect().apps.patch_namespaced_deployment_scale,
            name,
            self.namespace,
            {"spec": {"replicas": replicas}},
            _content_type=MERGE_PATCH,
        )

    def _set_batch(self, config_map: Obj, batch: str | None) -> None:
        name = config_map["metadata"]["name"]
        self._call(
            f"set {BATCH_KEY} of configmap {self.namespace}/{name} to {batch}",
            self._connect().core.patch_namespaced_config_map,
            name,
            self.namespace,
            {"data": {BATCH_KEY: batch}},  # None deletes the key (a JSON merge patch)
            _content_type=MERGE_PATCH,
        )

    def _switch(self, spec: PipelineSpec, step: Step, deployment: Obj) -> None:
        where = self._where("deployment", deployment)
        _stage_container(deployment, where)  # a merge on a missing name would add a container without image
        config_map = self._owned_config_map(spec, step.stage, required=False)
        if config_map is not None:
            self._set_batch(config_map, str(step.after.batch_size))
        try:
            self._patch_template(deployment, step.after)
        except TargetError as exc:
            if config_map is None:
                raise
            raise TargetError(f"{exc}; {self._restore_batch(config_map)}") from exc

    def _restore_batch(self, config_map: Obj) -> str:
        """Undo the ConfigMap write of a switch whose Deployment write failed; what happened, in words."""
        before = (config_map.get("data") or {}).get(BATCH_KEY)
        try:
            self._set_batch(config_map, before)
        except TargetError as exc:
            return f"restoring {BATCH_KEY} {before} failed too: {exc}"
        return f"{BATCH_KEY} of {self._where('configmap', config_map)} restored to {before}"

    def _patch_template(self, deployment: Obj, after: StageConfig) -> None:
        name = deployment["metadata"]["name"]
        container = {"name": CONTAINER, "env": variable_env(after), "resources": cpu_resources(after.cores)}
        self._call(
            f"switch deployment {self.namespace}/{name} to {after.variant} with {after.cores} core(s)",
            self._connect().apps.patch_namespaced_deployment,
            name,
            self.namespace,
            {"spec": {"template": {"spec": {"containers": [container]}}}},
            # Merges containers and env by name; a JSON merge patch would replace both lists.
            _content_type=STRATEGIC_MERGE,
        )


def _without_pool_retries(api: ApiClient) -> None:
    """Make :func:`~.retries.call_with_retries` the only retry loop of this client.

    urllib3 retries a failed connection 3 times by itself (and an idempotent read after a timeout), inside
    each of our attempts, so a dead server would cost up to 4 x ``attempts`` timeouts. The provider's
    ``get_conn`` builds the client from the kubeconfig/in-cluster config and offers no setting for it,
    and passing it our own configuration breaks its in-cluster path; so the REST client is rebuilt from a
    copy of the configuration it made, with retries off (the pool has made no connection yet).
    """
    configuration = copy.deepcopy(api.configuration)
    configuration.retries = False
    api.rest_client.pool_manager.clear()
    api.rest_client = rest.RESTClientObject(configuration)


def _stage_container(deployment: Obj, where: str) -> Obj:
    pod_spec = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    for container in pod_spec.get("containers") or []:
        if container.get("name") == CONTAINER:
            return container
    raise TargetError(f"{where}: spec.template.spec.containers has no container named {CONTAINER!r}")


def _container_env(container: Obj, where: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for variable in container.get("env") or []:
        if "value" in variable:
            env[variable["name"]] = str(variable["value"])
        elif variable.get("name") in (ENV_VARIANT, ENV_THREADS, ENV_BATCH):
            raise TargetError(
                f"{where}: container {CONTAINER}: env {variable['name']} has no literal value (valueFrom is "
                "not supported: the target could not change it)"
            )
    return env


def _check_stage_label(stage: str, obj: Obj, where: str) -> None:
    found = ((obj.get("metadata") or {}).get("labels") or {}).get(STAGE_LABEL)
    if found != label_value(stage):
        raise TargetError(
            f"{where}: metadata.labels[{STAGE_LABEL}] is {found!r}, expected {label_value(stage)!r}"
        )


def _integer(where: str, field: str, value: Any, *, minimum: int) -> int:
    if value is None:
        raise TargetError(f"{where}: {field} is missing")
    try:
        number = int(str(value).strip())
    except ValueError:
        raise TargetError(f"{where}: {field} is not an integer: {value!r}") from None
    if number < minimum:
        raise TargetError(f"{where}: {field} must be at least {minimum}, got {number}")
    return number


def _rollout_problems(deployment: Obj, replicas: int) -> list[str]:
    """Why a Deployment is not (yet) serving ``replicas`` up-to-date pods; empty when it is."""
    generation = int((deployment.get("metadata") or {}).get("generation") or 0)
    status = deployment.get("status") or {}
    problems = []
    observed = int(status.get("observedGeneration") or 0)
    if observed < generation:
        problems.append(f"generation {generation} not yet observed by the controller (observed {observed})")
    counts = {field: int(status.get(f"{field}Replicas") or 0) for field in ("updated", "ready", "available")}
    if any(count != replicas for count in counts.values()):
        problems.append(", ".join(f"{count}/{replicas} {field}" for field, count in counts.items()))
    return problems
