"""The fake kubelet: drives a pod from Pending to Succeeded/Failed, optionally running it for real.

With ``run_pods``, the first container's ``command`` + ``args`` run as a local subprocess (own process
group, the server's environment plus the container's ``env``, the server's working directory); its
stdout+stderr become the container log, its exit code the container's ``exitCode``. Without
``run_pods``, a pod goes straight to Succeeded with one fixed log line. Deleting a pod (or stopping
the server) terminates its process group: SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ipa_tasks.fake_kube_api.emulator import FakeKubeEmulator
from ipa_tasks.fake_kube_api.logs import LogBuffer
from ipa_tasks.fake_kube_api.objects import (
    CONFIGMAPS,
    EVENTS,
    NODE_NAME,
    PODS,
    SECRETS,
    metadata,
    rfc3339,
    spec,
)
from ipa_tasks.fake_kube_api.pods import (
    ContainerConfigError,
    container_env,
    resolve_argv,
    running_status,
    scheduled_status,
    terminated_status,
    waiting_status,
)

log = logging.getLogger(__name__)

_READ_CHUNK = 65536
_MESSAGE_LINES, _MESSAGE_BYTES = 80, 2048  # the kubelet's FallbackToLogsOnError limits


@dataclass
class KubeletOptions:
    """How pods are run."""

    run_pods: bool = False
    start_delay: float = 0.0  # seconds a pod stays Pending before its container starts
    kill_grace_seconds: float = 2.0  # upper bound on terminationGracePeriodSeconds
    workdir: Path | None = None  # None: the server's working directory
    base_env: Mapping[str, str] | None = None  # None: the server's environment


@dataclass
class _PodRun:
    uid: str
    task: asyncio.Task[str] | None = None
    logs: LogBuffer | None = None
    main_container: str = ""
    process: asyncio.subprocess.Process | None = None
    side_logs: dict[str, LogBuffer] = field(default_factory=dict)


class FakeKubelet:
    """Runs the pods of the fake server; one asyncio task per pod."""

    def __init__(self, store: FakeKubeEmulator, options: KubeletOptions) -> None:
        self._store = store
        self._options = options
        self._runs: dict[tuple[str, str], _PodRun] = {}
        self._stopping: set[asyncio.Task[str]] = set()  # deleted pods whose process is being killed
        self._next_ip = 0

    # ------------------------------------------------------------------------------ public API

    def start(self, namespace: str, name: str, uid: str) -> asyncio.Task[str]:
        """Start driving the pod; the task's result is its final phase."""
        self.stop(namespace, name)  # a recreated pod with the same name replaces the old run
        run = _PodRun(uid=uid)
        self._runs[namespace, name] = run
        run.task = asyncio.create_task(self._drive(namespace, name, run), name=f"pod {namespace}/{name}")
        return run.task

    def stop(self, namespace: str, name: str) -> None:
        """Forget the pod and kill its process (the pod object was deleted)."""
        run = self._runs.pop((namespace, name), None)
        if run is not None and run.task is not None and not run.task.done():
            run.task.cancel()
            self._stopping.add(run.task)
            run.task.add_done_callback(self._stopping.discard)

    def log_buffer(self, namespace: str, name: str, uid: str, container: str) -> LogBuffer | None:
        run = self._runs.get((namespace, name))
        if run is None or run.uid != uid or run.logs is None:
            return None
        if container == run.main_container:
            return run.logs
        return run.side_logs.get(container)

    def process_ids(self) -> dict[str, int]:
        """``namespace/name`` -> pid of the pods whose process is running."""
        return {
            f"{ns}/{name}": run.process.pid
            for (ns, name), run in self._runs.items()
            if run.process is not None and run.process.returncode is None
        }

    async def shutdown(self) -> None:
        """Kill every pod's process and wait for them (no orphans when the server stops)."""
        tasks = [run.task for run in self._runs.values() if run.task is not None and not run.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, *self._stopping, return_exceptions=True)
        self._runs.clear()

    # ---------------------------------------------------------------------------------- driving

    async def _drive(self, namespace: str, name: str, run: _PodRun) -> str:
        pod = await self._store.get_object(PODS, namespace, name)
        if pod is None or metadata(pod).get("uid") != run.uid:
            return "Unknown"
        await self._write(namespace, name, run.uid, scheduled_status(pod), node=True)
        await self._event(pod, "Scheduled", f"Successfully assigned {namespace}/{name} to {NODE_NAME}")
        if self._options.start_delay > 0:
            await asyncio.sleep(self._options.start_delay)
        containers = spec(pod).get("containers") or []
        if not containers:
            return "Unknown"
        run.main_container = containers[0]["name"]
        run.side_logs = {c["name"]: LogBuffer() for c in containers[1:]}
        for buffer in run.side_logs.values():
            await buffer.close()
        if not self._options.run_pods:
            return await self._complete_without_running(namespace, name, run, pod)
        return await self._run_process(namespace, name, run, pod)

    def _pod_ip(self) -> str:
        self._next_ip += 1
        return f"10.244.{self._next_ip // 250}.{self._next_ip % 250 + 2}"

    async def _complete_without_running(
        self, namespace: str, name: str, run: _PodRun, pod: dict[str, Any]
    ) -> str:
        run.logs = LogBuffer()
        started = rfc3339()
        await run.logs.append(f"fake kubelet: pod {name} was not run (run_pods is disabled)")
        status = terminated_status(
            pod,
            pod_ip=self._pod_ip(),
            started_at=started,
            exit_code=0,
            reason="Completed",
            message=None,
            container_id=None,
        )
        await self._write(namespace, name, run.uid, status)
        await run.logs.close()
        return "Succeeded"

    async def _environment(self, pod: dict[str, Any], container: Mapping[str, Any]) -> dict[str, str]:
        namespace = metadata(pod)["namespace"]
        config_maps = {metadata(o)["name"]: o for o in await self._store.list_objects(CONFIGMAPS, namespace)}
        secrets = {metadata(o)["name"]: o for o in await self._store.list_objects(SECRETS, namespace)}
        base = self._options.base_env if self._options.base_env is not None else os.environ
        return container_env(pod, container, base, config_maps, secrets)

    async def _run_process(self, namespace: str, name: str, run: _PodRun, pod: dict[str, Any]) -> str:
        container = spec(pod)["containers"][0]
        try:
            env = await self._environment(pod, container)
        except ContainerConfigError as exc:
            # As on a real node, the pod stays Pending until its config appears (here: forever).
            await self._write(
                namespace, name, run.uid, waiting_status(pod, "CreateContainerConfigError", str(exc))
            )
            await self._event(pod, "Failed", f"Error: {exc}", warning=True)
            return "Pending"
        argv = resolve_argv(container, env)
        run.logs = LogBuffer()
        pod_ip, started = self._pod_ip(), rfc3339()
        if not argv:
            await run.logs.append(
                f"fake kubelet: no command for image {container.get('image')!r}; nothing to run"
            )
            return await self._finish(namespace, name, run, pod, pod_ip, started, 0, None)
        cwd = self._options.workdir or Path.cwd()
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,  # own process group: killing the pod kills its children too
            )
        except OSError as exc:
            message = f'failed to start container "{container["name"]}": exec: "{argv[0]}": {exc.strerror}'
            await run.logs.append(message)
            await self._event(pod, "Failed", message, warning=True)
            return await self._finish(
                namespace, name, run, pod, pod_ip, started, 128, None, reason="StartError", message=message
            )
        run.process = process
        container_id = f"fake://{process.pid}"
        await self._write(namespace, name, run.uid, running_status(pod, pod_ip, started, container_id))
        await self._event(pod, "Started", f"Started container {container['name']}")
        try:
            code = await self._wait(process, run.logs)
        except asyncio.CancelledError:
            await self._terminate(process, pod)
            await run.logs.close()
            raise
        return await self._finish(namespace, name, run, pod, pod_ip, started, code, container_id)

    async def _wait(self, process: asyncio.subprocess.Process, logs: LogBuffer) -> int:
        """Capture the output until the process exits; the exit code as the container reports it."""
        assert process.stdout is not None
        pump = asyncio.create_task(self._pump(process.stdout, logs))
        try:
            code = await process.wait()
            # When the container's main process ends, the container (and all it spawned) is gone;
            # leftover children would also keep the pipe open forever.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            await pump
        finally:
            pump.cancel()
        return code if code >= 0 else 128 - code  # killed by signal N -> 128 + N

    @staticmethod
    async def _pump(stream: asyncio.StreamReader, logs: LogBuffer) -> None:
        pending = b""
        while chunk := await stream.read(_READ_CHUNK):
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                await logs.append(line.decode("utf-8", errors="backslashreplace").rstrip("\r"))
        if pending:
            await logs.append(pending.decode("utf-8", errors="backslashreplace"))

    async def _terminate(self, process: asyncio.subprocess.Process, pod: dict[str, Any]) -> None:
        grace = float(spec(pod).get("terminationGracePeriodSeconds", 30))
        grace = min(grace, self._options.kill_grace_seconds)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), grace)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()

    async def _finish(
        self,
        namespace: str,
        name: str,
        run: _PodRun,
        pod: dict[str, Any],
        pod_ip: str,
        started: str,
        exit_code: int,
        container_id: str | None,
        *,
        reason: str | None = None,
        message: str | None = None,
    ) -> str:
        assert run.logs is not None
        container = spec(pod)["containers"][0]
        if (
            message is None
            and exit_code != 0
            and container.get("terminationMessagePolicy") == "FallbackToLogsOnError"
        ):
            message = run.logs.tail(_MESSAGE_LINES, _MESSAGE_BYTES)
        status = terminated_status(
            pod,
            pod_ip=pod_ip,
            started_at=started,
            exit_code=exit_code,
            reason=reason or ("Completed" if exit_code == 0 else "Error"),
            message=message,
            container_id=container_id,
        )
        # Status first, then close the log: a client that stops following sees the container terminated.
        await self._write(namespace, name, run.uid, status)
        await run.logs.close()
        return status["phase"]

    # ------------------------------------------------------------------------------------ writes

    async def _write(
        self, namespace: str, name: str, uid: str, status: dict[str, Any], node: bool = False
    ) -> None:
        def mutate(pod: dict[str, Any]) -> None:
            pod["status"] = status
            if node:
                pod.setdefault("spec", {}).setdefault("nodeName", NODE_NAME)

        await self._store.update_object(PODS, namespace, name, mutate, uid=uid)

    async def _event(self, pod: dict[str, Any], reason: str, message: str, warning: bool = False) -> None:
        """Record a v1 Event about the pod, as the scheduler/kubelet do (KPO logs them)."""
        meta = metadata(pod)
        stamp = rfc3339()
        body = {
            "metadata": {"name": f"{meta['name']}.{os.urandom(8).hex()}", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "reason": reason,
            "message": message,
            "type": "Warning" if warning else "Normal",
            "source": {"component": "kubelet", "host": NODE_NAME},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        await self._store.create_object(EVENTS, meta["namespace"], body)
