"""The Helm chart (helm/), through real Helm: it lints clean, its values schema refuses bad values, what it
renders is valid Kubernetes, its stage objects are the ones the Kubernetes target manages, and its Role
allows exactly what the target does to them, in the namespace and nothing cluster-wide.

Helm installs into the fake API server (tests/helm/chart.py says why); the target then works on what Helm
created, over HTTP, through the ``ipa_kubernetes`` connection, as in production.
"""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from ipa_tasks.actuation.config import StageConfig
from ipa_tasks.actuation.kubernetes import KubernetesTarget
from ipa_tasks.actuation.manifests import is_owned, mounts_config_map, stage_manifests
from ipa_tasks.actuation.target import apply_change
from ipa_tasks.fake_kube_api import FakeKubeHandle, FakeKubeOptions, run_fake_kube_api
from ipa_tasks.spec import load_spec, resolve_spec_path
from tests.helm import chart
from tests.helm.rbac import access_of, denied

NO_PODS = pytest.mark.parametrize("fake_kube", [{"run_pods": False}], indirect=True)
BOTH_PIPELINES = {"pipelines": {"language-routing": {"enabled": True}}}
KUBERNETES_VERSIONS = ("1.26.0", kubernetes_validate.latest_version())
_namespaces = itertools.count()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One fake cluster for the tests that only render: each install goes to a namespace of its own."""
    with run_fake_kube_api(tmp_path_factory.mktemp("helm"), options=FakeKubeOptions()) as kube:
        yield kube


def render(cluster: FakeKubeHandle, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return chart.install(cluster.kubeconfig, f"render-{next(_namespaces)}", values)


def test_the_chart_lints_without_warnings(cluster: FakeKubeHandle) -> None:
    result = chart.lint(cluster.kubeconfig, "default")
    assert result["TotalChartsLinted"] == 1
    assert not result["Errors"]
    assert [m for m in result["Messages"] or [] if m["Severity"] >= chart.WARNING] == []


def test_lint_catches_a_broken_template(cluster: FakeKubeHandle, tmp_path: Path) -> None:
    broken = tmp_path / "helm"
    shutil.copytree(chart.CHART, broken)
    stages = broken / "templates" / "stages.yaml"
    stages.write_text(stages.read_text().replace("{{- end }}\n{{- end }}\n{{- end }}", "{{- end }}"))
    result = chart.lint(cluster.kubeconfig, "default", broken)
    assert result["Errors"]
    assert any(m["Severity"] > chart.WARNING for m in result["Messages"])


@pytest.mark.parametrize("values", [None, BOTH_PIPELINES], ids=["default", "both-pipelines"])
def test_every_rendered_object_is_valid_kubernetes(cluster: FakeKubeHandle, values: Any) -> None:
    objects = render(cluster, values)
    kinds = {obj["kind"] for obj in objects}
    assert {
        "Deployment",
        "Service",
        "ConfigMap",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "NetworkPolicy",
    } <= kinds
    for obj, version in itertools.product(objects, KUBERNETES_VERSIONS):
        kubernetes_validate.validate(obj, version, strict=True)  # raises, naming the field


def test_nothing_is_cluster_wide_and_everything_is_in_the_release_namespace(
    cluster: FakeKubeHandle,
) -> None:
    namespace = f"render-{next(_namespaces)}"
    objects = chart.install(cluster.kubeconfig, namespace, BOTH_PIPELINES)
    assert not {"ClusterRole", "ClusterRoleBinding", "Namespace"} & {obj["kind"] for obj in objects}
    assert {obj["metadata"].get("namespace") for obj in objects} == {namespace}


def test_per_stage_a_configmap_deployment_and_service_and_per_pipeline_a_router(
    cluster: FakeKubeHandle,
) -> None:
    objects = render(cluster, BOTH_PIPELINES)
    stages = {
        "digit-strips-detect",
        "digit-strips-classify",
        "language-routing-identify",
        "language-routing-classify",
    }
    routers = {"digit-strips-router", "language-routing-router"}
    assert set(chart.of_kind(objects, "Deployment")) == stages | routers
    assert set(chart.of_kind(objects, "Service")) == stages | routers
    assert set(chart.of_kind(objects, "ConfigMap")) == {f"{name}-config" for name in stages}
    router = chart.of_kind(objects, "Deployment")["digit-strips-router"]
    args = router["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--replicas=detect=http://digit-strips-detect:8000" in args
    assert "--replicas=classify=http://digit-strips-classify:8000" in args
    for deployment in chart.of_kind(objects, "Deployment").values():
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == "8000"


def test_stage_objects_are_the_ones_the_kubernetes_target_builds_and_reads(cluster: FakeKubeHandle) -> None:
    values = {
        "pipelines": {
            "digit-strips": {
                "stages": {
                    "detect": {"variant": "det_fcn_l", "batchSize": 2, "cores": 2, "replicas": 3},
                    "classify": {"variant": "cls_mlp_s", "batchSize": 8, "cores": 1, "replicas": 1},
                }
            }
        }
    }
    namespace = f"render-{next(_namespaces)}"
    objects = chart.install(cluster.kubeconfig, namespace, values)
    config = {
        "detect": StageConfig("det_fcn_l", 2, 2, 3),
        "classify": StageConfig("cls_mlp_s", 8, 1, 1),
    }
    expected = stage_manifests(
        load_spec(resolve_spec_path("digit-strips")), config, image="unused", namespace=namespace
    )
    rendered = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    for want in expected:
        got = rendered[(want["kind"], want["metadata"]["name"])]
        stage = want["metadata"]["labels"]["ipa/stage"]
        assert want["metadata"]["labels"].items() <= got["metadata"]["labels"].items()
        assert is_owned(got, "digit-strips", stage)
        if want["kind"] == "ConfigMap":
            assert got["data"] == want["data"]
            continue
        assert mounts_config_map(got, "digit-strips", stage)
        assert got["spec"]["replicas"] == want["spec"]["replicas"]
        assert got["spec"]["selector"] == want["spec"]["selector"]
        assert got["spec"]["strategy"] == want["spec"]["strategy"]
        want_pod, got_pod = want["spec"]["template"], got["spec"]["template"]
        assert want_pod["metadata"]["labels"].items() <= got_pod["metadata"]["labels"].items()
        assert want_pod["metadata"]["annotations"].items() <= got_pod["metadata"]["annotations"].items()
        (want_c,), (got_c,) = want_pod["spec"]["containers"], got_pod["spec"]["containers"]
        assert got_c["name"] == want_c["name"] == "stage-server"
        env = {e["name"]: e["value"] for e in got_c["env"]}
        assert {e["name"]: e["value"] for e in want_c["env"]}.items() <= env.items()
        for kind in ("requests", "limits"):
            assert got_c["resources"][kind]["cpu"] == want_c["resources"][kind]["cpu"]
        assert got_c["ports"] == want_c["ports"]
        for probe in ("readinessProbe", "livenessProbe"):
            assert got_c[probe]["httpGet"] == want_c[probe]["httpGet"]


def test_only_the_routers_and_the_scrapers_reach_the_stage_servers(cluster: FakeKubeHandle) -> None:
    (policy,) = chart.of_kind(render(cluster), "NetworkPolicy").values()
    selected = policy["spec"]["podSelector"]["matchLabels"]
    assert selected == {"app.kubernetes.io/part-of": "ipa", "app.kubernetes.io/component": "stage-server"}
    (rule,) = policy["spec"]["ingress"]
    router = {
        "podSelector": {
            "matchLabels": {"app.kubernetes.io/part-of": "ipa", "app.kubernetes.io/component": "router"}
        }
    }
    monitoring = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    assert rule["from"] == [router, monitoring]
    assert rule["ports"] == [{"port": 8000, "protocol": "TCP"}]
    off = render(cluster, {"networkPolicy": {"enabled": False}})
    assert chart.of_kind(off, "NetworkPolicy") == {}


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"pipelines": {"digit-strips": {"stages": {"detect": {"cores": 0}}}}}, "cores"),
        ({"pipelines": {"digit-strips": {"stages": {"detect": {"replicas": -1}}}}}, "replicas"),
        ({"pipelines": {"Digit_Strips": {"stages": {"a": {}}}}}, "Digit_Strips"),
        ({"router": {"replicas": "two"}}, "replicas"),
        ({"replicaCount": 3}, "replicaCount"),
    ],
    ids=["zero-cores", "negative-replicas", "bad-pipeline-name", "string-replicas", "unknown-key"],
)
def test_the_values_schema_refuses_bad_values_and_names_the_field(
    cluster: FakeKubeHandle, values: dict[str, Any], field: str
) -> None:
    with pytest.raises(
        chart.HelmFailed, match="values don't meet the specifications of the schema"
    ) as caught:
        render(cluster, values)
    assert field in str(caught.value)


def test_the_role_grants_exactly_the_stage_and_profiling_verbs(cluster: FakeKubeHandle) -> None:
    objects = render(cluster)
    (role,) = chart.of_kind(objects, "Role").values()
    stages = ["digit-strips-classify", "digit-strips-detect"]
    assert role["rules"] == [
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["list"]},
        {
            "apiGroups": ["apps"],
            "resources": ["deployments", "deployments/scale"],
            "resourceNames": stages,
            "verbs": ["get", "patch"],
        },
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]},
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": [f"{name}-config" for name in stages],
            "verbs": ["get", "patch"],
        },
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "get", "list", "delete"]},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    ]
    (binding,) = chart.of_kind(objects, "RoleBinding").values()
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "ipa-airflow",
    }
    namespace = role["metadata"]["namespace"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "ipa-airflow", "namespace": namespace}]


def test_an_existing_airflow_service_account_in_another_namespace_is_bound_not_created(
    cluster: FakeKubeHandle,
) -> None:
    values = {
        "airflow": {
            "serviceAccount": {"create": False, "name": "airflow-worker", "namespace": "airflow"},
            "profilingPods": False,
        }
    }
    objects = render(cluster, values)
    assert chart.of_kind(objects, "ServiceAccount") == {}
    (binding,) = chart.of_kind(objects, "RoleBinding").values()
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "airflow-worker", "namespace": "airflow"}
    ]
    (role,) = chart.of_kind(objects, "Role").values()
    assert not [rule for rule in role["rules"] if "pods" in rule["resources"]]


@NO_PODS
def test_the_target_adapts_the_installed_stages_within_the_role(fake_kube: FakeKubeHandle) -> None:
    objects = chart.install(fake_kube.kubeconfig, fake_kube.namespace)
    (role,) = chart.of_kind(objects, "Role").values()
    spec = load_spec(resolve_spec_path("digit-strips"))
    target = KubernetesTarget(request_timeout_s=2.0, backoff_s=0.0, sleep=lambda s: None)
    before = len(fake_kube.requests())

    running = target.read(spec)
    assert running == {
        "detect": StageConfig("det_fcn_m", 1, 1, 1),
        "classify": StageConfig("cls_cnn_m", 4, 1, 1),
    }
    wanted = {
        "detect": StageConfig("det_fcn_l", 1, 2, 2),  # switch variant and cores, scale out
        "classify": StageConfig("cls_cnn_m", 16, 1, 1),  # batch size only
    }
    report = apply_change(target, spec, running, wanted, ready_timeout_s=10, poll_s=0.1, log=lambda s: None)
    assert report.status == "applied", report.to_dict()
    assert target.read(spec) == wanted
    detect = fake_kube.get("apps/v1/deployments", "digit-strips-detect", fake_kube.namespace)
    assert detect is not None and detect["spec"]["replicas"] == 2
    # The chart's own fields survive the target's patches.
    (container,) = detect["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "1Gi"}
    assert {"name": "IPA_HOME", "value": "/var/lib/ipa"} in container["env"]

    accesses = [access_of(r.method, r.path, r.query) for r in fake_kube.requests()[before:]]
    made = [access for access in accesses if access is not None]
    assert {access.verb for access in made} >= {"list", "get", "patch"}
    assert any(access.resource == "deployments/scale" for access in made)
    assert denied(role["rules"], made) == []


def test_the_rule_check_denies_what_the_role_does_not_list(cluster: FakeKubeHandle) -> None:
    (role,) = chart.of_kind(render(cluster), "Role").values()
    ns = "/apis/apps/v1/namespaces/x/deployments"
    refused = [
        access_of("POST", ns),
        access_of("DELETE", f"{ns}/digit-strips-detect"),
        access_of("PATCH", f"{ns}/someone-elses"),
        access_of("PATCH", "/api/v1/namespaces/x/secrets/db"),
        access_of("GET", "/api/v1/namespaces/x/pods", "watch=true"),
    ]
    assert all(access is not None for access in refused)
    assert denied(role["rules"], [a for a in refused if a is not None]) == refused
