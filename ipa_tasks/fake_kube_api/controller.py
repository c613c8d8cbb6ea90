"""The fake controller manager: reacts to every stored change like the real controllers would, roughly.

* Deployments/StatefulSets/ReplicaSets: ``status`` follows ``spec.replicas`` (replicas, readyReplicas,
  updatedReplicas, availableReplicas, observedGeneration = generation, Available/Progressing
  conditions), ``workload_delay`` seconds after the last change. No ReplicaSets or pods are created.
* Pods: handed to the :class:`~.kubelet.FakeKubelet`; deleting a pod kills its process.
* Jobs: one pod at a time from ``spec.template``; Complete on success, a new pod after a failure until
  ``backoffLimit`` is exceeded, then Failed. Deleting a Job with Background/Foreground propagation
  deletes its pods.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import string
from typing import Any

from ipa_tasks.fake_kube_api.emulator import Change, FakeKubeEmulator
from ipa_tasks.fake_kube_api.kubelet import FakeKubelet
from ipa_tasks.fake_kube_api.objects import (
    EVENTS,
    JOBS,
    PODS,
    REPLICATED,
    condition,
    metadata,
    rfc3339,
    spec,
)

log = logging.getLogger(__name__)

Key = tuple[str, str, str]  # (resource plural, namespace, name)


def workload_status(obj: dict[str, Any]) -> dict[str, Any]:
    """The status a healthy controller reports once all ``spec.replicas`` are rolled out."""
    replicas = int(spec(obj).get("replicas", 1))
    status: dict[str, Any] = {"observedGeneration": int(metadata(obj).get("generation", 1))}
    # Like the real API (omitempty), zero counts are left out.
    if replicas:
        for field in ("replicas", "readyReplicas", "updatedReplicas", "availableReplicas"):
            status[field] = replicas
    if obj.get("kind") == "StatefulSet":
        status["currentReplicas"] = replicas
    old = {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or []}
    fresh = [
        condition("Available", True, "MinimumReplicasAvailable", "Deployment has minimum availability."),
        condition("Progressing", True, "NewReplicaSetAvailable", "ReplicaSet has successfully progressed."),
    ]
    # Unchanged conditions keep their transition time, so a no-op reconcile stores nothing.
    status["conditions"] = [old.get(c["type"], c) for c in fresh]
    return status


def job_pod(job: dict[str, Any]) -> dict[str, Any]:
    """A pod for one attempt of ``job``, owned by it, with the labels the job controller sets."""
    meta, template = metadata(job), spec(job).get("template") or {}
    suffix = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(5))
    template_meta = template.get("metadata") or {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{meta['name']}-{suffix}",
            "labels": dict(template_meta.get("labels") or {}),
            "annotations": dict(template_meta.get("annotations") or {}),
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": dict(template.get("spec") or {}),
    }


class FakeController:
    """Dispatches changes reported by the emulator; owns the per-object background tasks."""

    def __init__(
        self,
        store: FakeKubeEmulator,
        kubelet: FakeKubelet,
        *,
        workload_delay: float = 0.0,
        manage_workloads: bool = True,
    ) -> None:
        self._store = store
        self._kubelet = kubelet
        self._workload_delay = workload_delay
        self._manage_workloads = manage_workloads
        self._tasks: dict[Key, asyncio.Task[None]] = {}

    def notify(self, change: Change) -> None:
        """Called by the emulator (in the server's event loop) after every API write."""
        if change.namespace is None:
            return
        key: Key = (str(change.resource.plural), change.namespace, change.name)
        uid = str(metadata(change.obj).get("uid", ""))
        if change.resource in REPLICATED and self._manage_workloads:
            if change.event == "DELETED":
                self._cancel(key)
            else:  # restart the delay on each change: status settles `workload_delay` after the last
                self._spawn(key, self._reconcile_workload(change, uid))
        elif change.resource == PODS and change.event == "ADDED":
            self._kubelet.start(change.namespace, change.name, uid)
        elif change.resource == PODS and change.event == "DELETED":
            self._kubelet.stop(change.namespace, change.name)
            self._spawn(("events", *key[1:]), self._forget_events(change.namespace, uid))
        elif change.resource == JOBS and change.event == "ADDED":
            self._spawn(key, self._run_job(change.namespace, change.name, uid))
        elif change.resource == JOBS and change.event == "DELETED":
            self._cancel(key)
            if change.propagation in ("Background", "Foreground"):
                self._spawn(("pods-of", *key[1:]), self._delete_owned_pods(change.namespace, uid))

    async def shutdown(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        await self._kubelet.shutdown()

    def _spawn(self, key: Key, coro: Any) -> None:
        self._cancel(key)
        task = asyncio.create_task(self._guarded(coro), name=f"controller {'/'.join(key)}")
        self._tasks[key] = task
        task.add_done_callback(
            lambda done: self._tasks.pop(key, None) if self._tasks.get(key) is done else None
        )

    def _cancel(self, key: Key) -> None:
        task = self._tasks.pop(key, None)
        if task is not None:
            task.cancel()

    @staticmethod
    async def _guarded(coro: Any) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("fake controller task failed")

    # ------------------------------------------------------------------------------- workloads

    async def _reconcile_workload(self, change: Change, uid: str) -> None:
        if self._workload_delay > 0:
            await asyncio.sleep(self._workload_delay)

        def mutate(obj: dict[str, Any]) -> None:
            obj["status"] = workload_status(obj)

        await self._store.update_object(change.resource, change.namespace, change.name, mutate, uid=uid)

    # ------------------------------------------------------------------------------------ pods

    async def _forget_events(self, namespace: str, pod_uid: str) -> None:
        for event in await self._store.list_objects(EVENTS, namespace):
            if (event.get("involvedObject") or {}).get("uid") == pod_uid:
                await self._store.delete_object(EVENTS, namespace, metadata(event)["name"])

    async def _delete_owned_pods(self, namespace: str, owner_uid: str) -> None:
        for pod in await self._store.list_objects(PODS, namespace):
            owners = metadata(pod).get("ownerReferences") or []
            if any(ref.get("uid") == owner_uid for ref in owners):
                name = metadata(pod)["name"]
                await self._store.delete_object(PODS, namespace, name)
                self._kubelet.stop(namespace, name)
                await self._forget_events(namespace, metadata(pod)["uid"])

    # ------------------------------------------------------------------------------------ jobs

    async def _set_job_status(self, namespace: str, name: str, uid: str, status: dict[str, Any]) -> bool:
        def mutate(job: dict[str, Any]) -> None:
            job["status"] = status

        return await self._store.update_object(JOBS, namespace, name, mutate, uid=uid) is not None

    async def _attempt(self, job: dict[str, Any]) -> str:
        """Run one pod of the job to completion; its final phase ("Failed" if it was deleted)."""
        namespace = metadata(job)["namespace"]
        pod = await self._store.create_object(PODS, namespace, job_pod(job))
        task = self._kubelet.start(namespace, metadata(pod)["name"], metadata(pod)["uid"])
        await asyncio.wait({task})  # unlike `await task`, a deleted pod does not cancel the job's run
        return "Failed" if task.cancelled() else task.result()

    async def _run_job(self, namespace: str, name: str, uid: str) -> None:
        job = await self._store.get_object(JOBS, namespace, name)
        if job is None:
            return
        backoff_limit = int(spec(job).get("backoffLimit", 6))
        started, failed = rfc3339(), 0
        while await self._set_job_status(namespace, name, uid, self._job_running(started, failed)):
            phase = await self._attempt(job)
            if phase == "Succeeded":
                status = {"startTime": started, "completionTime": rfc3339(), "succeeded": 1, "ready": 0}
                status["conditions"] = [condition("Complete", True)]
                await self._set_job_status(namespace, name, uid, status | self._failed(failed))
                return
            failed += 1
            if failed > backoff_limit:
                message = "Job has reached the specified backoff limit"
                status = {"startTime": started, "ready": 0, "failed": failed}
                status["conditions"] = [condition("Failed", True, "BackoffLimitExceeded", message)]
                await self._set_job_status(namespace, name, uid, status)
                return

    @staticmethod
    def _failed(failed: int) -> dict[str, Any]:
        return {"failed": failed} if failed else {}

    def _job_running(self, started: str, failed: int) -> dict[str, Any]:
        return {"startTime": started, "active": 1, "ready": 0, **self._failed(failed)}
