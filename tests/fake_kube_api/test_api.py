"""The fake API server through the official client over HTTP: CRUD, selectors, patches, versions, failures."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from ipa_tasks.fake_kube_api import FakeKubeHandle

NS = "default"
DEPLOYMENTS = "apps/v1/deployments"


@pytest.fixture
def api(fake_kube: FakeKubeHandle) -> Iterator[client.ApiClient]:
    api_client = config.new_client_from_config(config_file=str(fake_kube.kubeconfig))
    yield api_client
    api_client.close()


@pytest.fixture
def apps(api: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(api)


@pytest.fixture
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


def deployment(name: str, replicas: int = 2, tier: str = "serving") -> dict[str, Any]:
    container = {
        "name": "server",
        "image": f"{name}:1",
        "env": [{"name": "MODEL_VARIANT", "value": "small"}, {"name": "BATCH_SIZE", "value": "4"}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"tier": tier, "app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container]}},
        },
    }


def env_of(dep: client.V1Deployment) -> dict[str, str]:
    return {e.name: e.value for e in dep.spec.template.spec.containers[0].env}


def test_create_sets_server_fields_and_read_returns_them(apps: client.AppsV1Api) -> None:
    created = apps.create_namespaced_deployment(NS, deployment("a"))
    read = apps.read_namespaced_deployment("a", NS)
    assert created.metadata.uid and read.metadata.uid == created.metadata.uid
    assert read.metadata.generation == 1 and read.metadata.creation_timestamp is not None
    assert read.metadata.namespace == NS and read.spec.template.spec.containers[0].image == "a:1"
    with pytest.raises(ApiException) as conflict:
        apps.create_namespaced_deployment(NS, deployment("a"))
    assert conflict.value.status == 409 and json.loads(conflict.value.body)["reason"] == "AlreadyExists"


def test_missing_objects_are_404_with_a_kubernetes_status(apps: client.AppsV1Api) -> None:
    with pytest.raises(ApiException) as missing:
        apps.read_namespaced_deployment("nope", NS)
    body = json.loads(missing.value.body)
    assert missing.value.status == 404
    assert body["kind"] == "Status" and body["message"] == 'deployments.apps "nope" not found'


def test_generate_name_gives_a_unique_name(core: client.CoreV1Api) -> None:
    body = {"metadata": {"generateName": "cfg-"}, "data": {"k": "v"}}
    first, second = (core.create_namespaced_config_map(NS, body) for _ in range(2))
    assert first.metadata.name.startswith("cfg-") and first.metadata.name != second.metadata.name


def test_list_filters_by_label_selector_and_has_a_kind(api: client.ApiClient, apps: client.AppsV1Api) -> None:
    apps.create_namespaced_deployment(NS, deployment("serve-a"))
    apps.create_namespaced_deployment(NS, deployment("serve-b"))
    apps.create_namespaced_deployment(NS, deployment("batch-c", tier="batch"))

    def names(selector: str) -> list[str]:
        return sorted(
            d.metadata.name for d in apps.list_namespaced_deployment(NS, label_selector=selector).items
        )

    assert names("tier=serving") == names("tier==serving") == ["serve-a", "serve-b"]
    assert names("tier!=serving") == ["batch-c"]
    assert names("app in (serve-a,batch-c),tier") == ["batch-c", "serve-a"]
    assert names("app notin (serve-a)") == ["batch-c", "serve-b"]
    assert names("!tier") == [] and names("missing!=x") == ["batch-c", "serve-a", "serve-b"]
    raw = api.call_api("/apis/apps/v1/namespaces/default/deployments", "GET", _preload_content=False)
    listing = json.loads(raw.data)
    assert listing["kind"] == "DeploymentList" and listing["apiVersion"] == "apps/v1"
    with pytest.raises(ApiException) as bad:
        apps.list_namespaced_deployment(NS, label_selector="tier in serving")
    assert bad.value.status == 400


def test_strategic_merge_keeps_the_image_and_merges_env_by_name(apps: client.AppsV1Api) -> None:
    apps.create_namespaced_deployment(NS, deployment("web"))

    def containers_patch(*env: dict[str, str]) -> dict[str, Any]:
        return {"spec": {"template": {"spec": {"containers": [{"name": "server", "env": list(env)}]}}}}

    patched = apps.patch_namespaced_deployment(
        "web", NS, containers_patch({"name": "BATCH_SIZE", "value": "8"}, {"name": "NEW", "value": "1"})
    )
    assert patched.spec.template.spec.containers[0].image == "web:1"
    assert env_of(patched) == {"MODEL_VARIANT": "small", "BATCH_SIZE": "8", "NEW": "1"}
    deleted = apps.patch_namespaced_deployment(
        "web", NS, containers_patch({"name": "NEW", "$patch": "delete"})
    )
    assert env_of(deleted) == {"MODEL_VARIANT": "small", "BATCH_SIZE": "8"}


def test_merge_patch_and_json_patch_replace_lists(apps: client.AppsV1Api) -> None:
    apps.create_namespaced_deployment(NS, deployment("web"))
    ops = [
        {
            "op": "replace",
            "path": "/spec/template/spec/containers/0/env",
            "value": [{"name": "ONLY", "value": "1"}],
        }
    ]
    assert env_of(apps.patch_namespaced_deployment("web", NS, ops)) == {"ONLY": "1"}
    with pytest.raises(ApiException) as invalid:
        apps.patch_namespaced_deployment("web", NS, [{"op": "remove", "path": "/spec/nothing"}])
    assert invalid.value.status == 422


def test_generation_follows_spec_and_resource_version_every_change(apps: client.AppsV1Api) -> None:
    created = apps.create_namespaced_deployment(NS, deployment("web"))
    relabelled = apps.patch_namespaced_deployment("web", NS, {"metadata": {"labels": {"x": "1"}}})
    noop = apps.patch_namespaced_deployment("web", NS, {"metadata": {"labels": {"x": "1"}}})
    rescaled = apps.patch_namespaced_deployment("web", NS, {"spec": {"replicas": 5}})
    versions = [int(d.metadata.resource_version) for d in (created, relabelled, rescaled)]
    assert versions == sorted(set(versions))
    assert noop.metadata.resource_version == relabelled.metadata.resource_version
    assert [d.metadata.generation for d in (created, relabelled, rescaled)] == [1, 1, 2]


def test_stale_resource_version_is_a_409_conflict(apps: client.AppsV1Api) -> None:
    created = apps.create_namespaced_deployment(NS, deployment("web"))
    apps.patch_namespaced_deployment("web", NS, {"spec": {"replicas": 3}})
    stale = {"metadata": {"resourceVersion": created.metadata.resource_version}, "spec": {"replicas": 4}}
    with pytest.raises(ApiException) as conflict:
        apps.patch_namespaced_deployment("web", NS, stale)
    assert conflict.value.status == 409 and json.loads(conflict.value.body)["reason"] == "Conflict"
    current = apps.read_namespaced_deployment("web", NS)
    current.spec.replicas = 6
    replaced = apps.replace_namespaced_deployment("web", NS, current)  # PUT with the fresh version
    assert replaced.spec.replicas == 6 and replaced.metadata.generation == 3


def test_scale_subresource_reads_and_writes_replicas(apps: client.AppsV1Api) -> None:
    apps.create_namespaced_deployment(NS, deployment("web", replicas=2))
    scale = apps.read_namespaced_deployment_scale("web", NS)
    assert scale.kind == "Scale" and scale.spec.replicas == 2 and scale.status.selector == "app=web"
    assert apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": 5}}).spec.replicas == 5
    stored = apps.read_namespaced_deployment("web", NS)
    assert stored.spec.replicas == 5 and stored.metadata.generation == 2
    assert stored.spec.template.spec.containers[0].image == "web:1"


@pytest.mark.parametrize("fake_kube", [{"workload_delay": 0.3}], indirect=True)
def test_deployment_status_follows_replicas(fake_kube: FakeKubeHandle, apps: client.AppsV1Api) -> None:
    apps.create_namespaced_deployment(NS, deployment("web", replicas=2))
    assert not (fake_kube.get(DEPLOYMENTS, "web") or {}).get("status")  # the controller lags behind

    def settled(replicas: int, generation: int) -> Any:
        return lambda d: (
            d.get("status", {}).get("observedGeneration") == generation
            and (d["status"].get("readyReplicas", 0) == replicas)
        )

    status = fake_kube.wait_for(DEPLOYMENTS, "web", settled(2, 1))["status"]
    assert status["replicas"] == status["updatedReplicas"] == status["availableReplicas"] == 2
    apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": 0}})
    status = fake_kube.wait_for(DEPLOYMENTS, "web", settled(0, 2))["status"]
    assert "replicas" not in status  # zero counts are omitted, as by the real API
    read = apps.read_namespaced_deployment_status("web", NS).status
    assert read.ready_replicas is None and read.observed_generation == 2


@pytest.mark.parametrize(
    "fake_kube", [{"manage_workloads": False}], indirect=True
)  # nobody else writes status
def test_status_is_only_written_through_the_status_subresource(apps: client.AppsV1Api) -> None:
    dep = apps.create_namespaced_deployment(NS, deployment("web"))
    apps.patch_namespaced_deployment("web", NS, {"status": {"replicas": 42}})
    assert apps.read_namespaced_deployment("web", NS).status is None
    apps.patch_namespaced_deployment_status("web", NS, {"status": {"replicas": 42}, "spec": {"replicas": 9}})
    read = apps.read_namespaced_deployment("web", NS)
    assert read.status.replicas == 42 and read.spec.replicas == dep.spec.replicas


def test_delete_and_delete_collection(apps: client.AppsV1Api, fake_kube: FakeKubeHandle) -> None:
    for name, tier in (("a", "serving"), ("b", "serving"), ("c", "batch")):
        apps.create_namespaced_deployment(NS, deployment(name, tier=tier))
    apps.delete_namespaced_deployment("a", NS)
    with pytest.raises(ApiException) as gone:
        apps.read_namespaced_deployment("a", NS)
    assert gone.value.status == 404
    apps.delete_collection_namespaced_deployment(NS, label_selector="tier=serving")
    assert [d.metadata.name for d in apps.list_namespaced_deployment(NS).items] == ["c"]
    history = fake_kube.history(DEPLOYMENTS, "a")
    assert history[0]["metadata"]["name"] == "a" and history[-1] is None


def test_finalizers_delay_deletion_until_removed(core: client.CoreV1Api) -> None:
    core.create_namespaced_config_map(NS, {"metadata": {"name": "cm", "finalizers": ["x/y"]}})
    core.delete_namespaced_config_map("cm", NS)
    assert core.read_namespaced_config_map("cm", NS).metadata.deletion_timestamp is not None
    core.patch_namespaced_config_map("cm", NS, {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as gone:
        core.read_namespaced_config_map("cm", NS)
    assert gone.value.status == 404


def test_injected_failures_hit_the_next_matching_requests_only(
    fake_kube: FakeKubeHandle, apps: client.AppsV1Api
) -> None:
    apps.create_namespaced_deployment(NS, deployment("web"))
    fake_kube.fail_next("PATCH", "/apis/apps/v1/namespaces/default/deployments/web*", status=500, times=2)
    fake_kube.fail_next("*", "/apis/apps/v1/namespaces/*/deployments/other", status=409)
    for _ in range(2):
        with pytest.raises(ApiException) as failed:
            apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": 3}})
        assert failed.value.status == 500
    assert apps.read_namespaced_deployment("web", NS).spec.replicas == 2  # failed writes stored nothing
    assert apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": 3}}).spec.replicas == 3
    with pytest.raises(ApiException) as conflict:
        apps.read_namespaced_deployment("other", NS)
    assert conflict.value.status == 409
    patches = [(r.path, r.status) for r in fake_kube.requests() if r.method == "PATCH"]
    assert [status for _, status in patches] == [500, 500, 200]


def test_failures_can_be_injected_over_http(api: client.ApiClient, apps: client.AppsV1Api) -> None:
    rule = {"method": "GET", "path": "/apis/apps/v1/namespaces/default/deployments", "status": 503}
    api.call_api("/_fake/failures", "POST", body=rule, _preload_content=False)
    with pytest.raises(ApiException) as unavailable:
        apps.list_namespaced_deployment(NS)
    assert unavailable.value.status == 503
    assert apps.list_namespaced_deployment(NS).items == []


def test_watch_streams_matching_changes_until_the_timeout(apps: client.AppsV1Api) -> None:
    apps.create_namespaced_deployment(NS, deployment("a"))
    apps.create_namespaced_deployment(NS, deployment("b", tier="batch"))
    events = [
        (e["type"], e["object"].metadata.name)
        for e in watch.Watch().stream(
            apps.list_namespaced_deployment, NS, label_selector="tier=serving", timeout_seconds=1
        )
    ]
    assert events == [("ADDED", "a")]


def test_namespaces_nodes_and_version_are_served(core: client.CoreV1Api) -> None:
    assert core.create_namespace({"metadata": {"name": "mlops"}}).status.phase == "Active"
    assert [n.metadata.name for n in core.list_namespace().items] == ["default", "kube-system", "mlops"]
    assert core.read_namespace("mlops").metadata.labels["kubernetes.io/metadata.name"] == "mlops"
    assert [n.metadata.name for n in core.list_node().items] == ["fake-node"]
    assert client.VersionApi(core.api_client).get_code().major == "1"


def test_injected_delays_answer_late_then_serve_or_fail(
    fake_kube: FakeKubeHandle, apps: client.AppsV1Api
) -> None:
    apps.create_namespaced_deployment(NS, deployment("web"))
    path = "/apis/apps/v1/namespaces/default/deployments/web/scale"
    fake_kube.fail_next("PATCH", path, status=0, delay_s=0.5)
    started = time.monotonic()
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):  # the client gives up; the write still lands
        apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": 3}}, _request_timeout=0.1)
    assert fake_kube.wait_for(DEPLOYMENTS, "web", lambda d: d["spec"]["replicas"] == 3, timeout=5)
    assert time.monotonic() - started >= 0.5
    fake_kube.fail_next("GET", "/apis/apps/v1/namespaces/default/deployments/web", status=503, delay_s=0.2)
    started = time.monotonic()
    with pytest.raises(ApiException) as slow_failure:
        apps.read_namespaced_deployment("web", NS)
    assert slow_failure.value.status == 503
    assert time.monotonic() - started >= 0.2
    assert apps.read_namespaced_deployment("web", NS).spec.replicas == 3
    with pytest.raises(ValueError, match="delay_s"):
        fake_kube.fail_next("GET", path, status=0)
