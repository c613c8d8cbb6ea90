"""A stateful fake Kubernetes API server for tests and the local demo (no cluster, no Docker needed).

Built on kmock 0.8's ``KubernetesEmulator`` (real HTTP; the official client, Airflow's
``KubernetesHook`` and ``KubernetesPodOperator`` talk to it through a kubeconfig), plus a fake
controller (Deployment/Job status) and kubelet (pods run as local processes, real logs and exit codes).

* In tests: ``with run_fake_kube_api(tmp_path, options=FakeKubeOptions(run_pods=True)) as kube: ...``
  (or the ``fake_kube`` pytest fixture).
* As a process: ``python -m ipa_tasks.fake_kube_api --port 18080 --kubeconfig out/kubeconfig.yaml``.

Not a real cluster: no admission/validation, RBAC, scheduling, images or volumes (a pod's process sees
the host's files); Deployments get no pods; no exec/attach/port-forward, no server-side apply. Each
module's docstring says what it emulates.
"""

from ipa_tasks.fake_kube_api.emulator import Change, FakeKubeEmulator, RequestRecord
from ipa_tasks.fake_kube_api.failures import FailureInjector, FailureRule
from ipa_tasks.fake_kube_api.server import (
    FakeKubeHandle,
    FakeKubeOptions,
    FakeKubeServer,
    run_fake_kube_api,
    write_kubeconfig,
)

__all__ = [
    "Change",
    "FailureInjector",
    "FailureRule",
    "FakeKubeEmulator",
    "FakeKubeHandle",
    "FakeKubeOptions",
    "FakeKubeServer",
    "RequestRecord",
    "run_fake_kube_api",
    "write_kubeconfig",
]
