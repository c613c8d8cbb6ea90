"""Running the fake API server: as an asyncio service, or in a background thread for tests.

:class:`FakeKubeServer` wires the emulator, kubelet and controller to an aiohttp server on
``host:port`` (port 0 picks a free one). :func:`run_fake_kube_api` runs one in its own thread and event
loop, writes a kubeconfig and yields a :class:`FakeKubeHandle`, a synchronous facade for tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp.web
import kmock
import yaml

from ipa_tasks.fake_kube_api.controller import FakeController
from ipa_tasks.fake_kube_api.emulator import FakeKubeEmulator, RequestRecord
from ipa_tasks.fake_kube_api.failures import FailureInjector, FailureRule
from ipa_tasks.fake_kube_api.kubelet import FakeKubelet, KubeletOptions
from ipa_tasks.fake_kube_api.objects import PODS, parse_resource

T = TypeVar("T")
DEFAULT_TOKEN = "fake-token"


@dataclass
class FakeKubeOptions:
    """Behaviour of the fake cluster."""

    run_pods: bool = False  # run each pod's command as a local process (else: Succeeded at once)
    pod_start_delay: float = 0.0  # seconds a pod stays Pending before it runs
    workload_delay: float = 0.0  # seconds before a Deployment's status follows a change
    kill_grace_seconds: float = 2.0  # SIGTERM -> SIGKILL delay when a pod is deleted
    workdir: Path | None = None  # working directory of pod processes (None: the server's)
    manage_workloads: bool = True  # False: nobody writes Deployment status (tests write it)


def write_kubeconfig(path: Path, url: str, namespace: str = "default", token: str = DEFAULT_TOKEN) -> Path:
    """Write a kubeconfig for ``url`` (plain http, token auth) and return its path."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": url}}],
        "contexts": [
            {"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}
        ],
        "current-context": "fake",
        "users": [{"name": "fake", "user": {"token": token}}],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class FakeKubeServer:
    """The fake cluster as an asyncio service: ``await start()`` ... ``await stop()``."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, options: FakeKubeOptions | None = None
    ) -> None:
        self.options = options or FakeKubeOptions()
        self._host, self._port = host, port
        self.emulator = FakeKubeEmulator(failures=FailureInjector())
        kubelet_options = KubeletOptions(
            run_pods=self.options.run_pods,
            start_delay=self.options.pod_start_delay,
            kill_grace_seconds=self.options.kill_grace_seconds,
            workdir=self.options.workdir,
        )
        self.kubelet = FakeKubelet(self.emulator, kubelet_options)
        self.controller = FakeController(
            self.emulator,
            self.kubelet,
            workload_delay=self.options.workload_delay,
            manage_workloads=self.options.manage_workloads,
        )
        self.emulator.on_change = self.controller.notify
        self.emulator.log_source = self.kubelet.log_buffer
        self._stack = contextlib.AsyncExitStack()
        self._runner: aiohttp.web.ServerRunner | None = None
        self.url = ""

    async def start(self) -> str:
        """Bind and serve; returns the URL (``http://host:port``)."""
        await self._stack.enter_async_context(self.emulator)  # starts kmock's stream feeder
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._host, self._port))
        except OSError:
            sock.close()
            await self._stack.aclose()
            raise
        # Watches and followed logs may be open at shutdown; do not wait a minute for them.
        self._runner = aiohttp.web.ServerRunner(
            aiohttp.web.Server(self.emulator, access_log=None), shutdown_timeout=1.0
        )
        await self._runner.setup()
        await aiohttp.web.SockSite(self._runner, sock).start()
        host, port = sock.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self.url

    async def stop(self) -> None:
        """Kill pod processes, stop controllers, close connections."""
        await self.controller.shutdown()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self._stack.aclose()


class FakeKubeHandle:
    """Synchronous access to a fake server running in another thread's event loop."""

    def __init__(
        self, server: FakeKubeServer, loop: asyncio.AbstractEventLoop, kubeconfig: Path, namespace: str
    ) -> None:
        self._server = server
        self._loop = loop
        self.url = server.url
        self.kubeconfig = kubeconfig
        self.namespace = namespace

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def get(
        self, resource: str | kmock.resource, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        """The stored object (a copy), or ``None``; ``resource`` like ``"apps/v1/deployments"``."""
        res = parse_resource(resource)
        return self._call(self._server.emulator.get_object(res, self._ns(res, namespace), name))

    def list(self, resource: str | kmock.resource, namespace: str | None = None) -> list[dict[str, Any]]:
        """All stored objects of a resource (in one namespace if given)."""
        return self._call(self._server.emulator.list_objects(parse_resource(resource), namespace))

    def history(
        self, resource: str | kmock.resource, name: str, namespace: str | None = None
    ) -> list[dict[str, Any] | None]:
        """Every stored version of an object, oldest first; ``None`` marks a deletion."""
        res = parse_resource(resource)
        return self._call(self._server.emulator.history(res, self._ns(res, namespace), name))

    def histories(
        self, resource: str | kmock.resource, namespace: str | None = None
    ) -> dict[str, list[dict[str, Any] | None]]:
        """name -> every retained version (``None`` marks a deletion), deleted objects included."""
        return self._call(self._server.emulator.histories(parse_resource(resource), namespace))

    def _ns(self, resource: kmock.resource, namespace: str | None) -> str | None:
        info = self._server.emulator.resource_info(resource)
        if info is not None and not info.namespaced:
            return None
        return namespace or self.namespace

    def wait_for(
        self,
        resource: str | kmock.resource,
        name: str,
        predicate: Callable[[dict[str, Any]], bool],
        namespace: str | None = None,
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        """Poll until the object exists and satisfies ``predicate``; it is returned."""
        deadline = time.monotonic() + timeout
        while True:
            obj = self.get(resource, name, namespace)
            if obj is not None and predicate(obj):
                return obj
            if time.monotonic() > deadline:
                raise TimeoutError(f"{resource} {name}: condition not met in {timeout}s; last seen: {obj}")
            time.sleep(0.05)

    def fail_next(
        self,
        method: str,
        path: str,
        status: int = 500,
        times: int = 1,
        message: str | None = None,
        delay_s: float = 0.0,
    ) -> FailureRule:
        """Fail the next ``times`` requests ``method path`` (``path`` may be a glob, ``method`` ``*``);
        with ``delay_s``, answer that late (``status`` 0: then serve them normally)."""
        return self._server.emulator.failures.add(method, path, status, times, message, delay_s)

    def clear_failures(self) -> None:
        self._server.emulator.failures.clear()

    def requests(self) -> list[RequestRecord]:
        """Requests served so far, oldest first (method, path, query, status)."""
        log = self._server.emulator.request_log
        return self._call(_now(lambda: list(log)))  # copied in the loop that appends to it

    def pod_log(self, name: str, namespace: str | None = None, container: str | None = None) -> str:
        """The captured output of a pod's (first) container, or ``""``."""
        pod = self.get(PODS, name, namespace)
        if pod is None:
            return ""
        meta = pod["metadata"]
        containers = [c["name"] for c in pod["spec"]["containers"]]
        kubelet = self._server.kubelet

        def text() -> str:  # in the server's loop, where the buffer is written
            buffer = kubelet.log_buffer(
                meta["namespace"], meta["name"], meta["uid"], container or containers[0]
            )
            return "" if buffer is None else buffer.text()

        return self._call(_now(text))

    def pod_pids(self) -> dict[str, int]:
        """``namespace/name`` -> pid of the pods whose process is running."""
        return self._call(_now(self._server.kubelet.process_ids))


async def _now(fn: Callable[[], T]) -> T:
    return fn()


@contextlib.contextmanager
def run_fake_kube_api(
    folder: Path,
    *,
    options: FakeKubeOptions | None = None,
    namespace: str = "default",
    host: str = "127.0.0.1",
    port: int = 0,
) -> Iterator[FakeKubeHandle]:
    """Run a fake server in a background thread; write ``folder/kubeconfig.yaml``; stop on exit."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fake-kube-api", daemon=True)
    thread.start()
    server: FakeKubeServer | None = None

    async def start() -> FakeKubeServer:
        created = FakeKubeServer(host, port, options)  # built in the loop: kmock creates asyncio objects
        await created.start()
        return created

    try:
        server = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
        kubeconfig = write_kubeconfig(Path(folder) / "kubeconfig.yaml", server.url, namespace)
        yield FakeKubeHandle(server, loop, kubeconfig, namespace)
    finally:
        if server is not None:
            asyncio.run_coroutine_threadsafe(server.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
