"""The stateful fake API server: kmock's ``KubernetesEmulator`` with the write path of a real apiserver.

kmock provides the HTTP handler, request parsing, API discovery (bundled built-in resources), the object
store with version history, and LIST/WATCH serving. This subclass takes over every write and GET itself
so that it behaves like a kube-apiserver where clients can tell the difference:

* CREATE: ``uid``, increasing ``resourceVersion``, ``generation: 1``, ``creationTimestamp``,
  ``generateName``, 201 Created, 409 AlreadyExists; ``status`` reset where a status subresource exists.
* PATCH (strategic merge / JSON merge / JSON patch) and PUT: exact results computed in
  :mod:`.patching`; ``generation`` bumped only when ``spec`` changes; ``resourceVersion`` preconditions
  (409 Conflict); ``status`` and ``scale`` subresources touch only their part of the object.
* DELETE (also of collections, by selector), honouring finalizers; GET of ``scale`` returns a Scale.
* LIST/WATCH: ``labelSelector``/``fieldSelector`` filtering, ``kind``/``apiVersion`` on lists,
  ``timeoutSeconds`` on watches.
* ``pods/<name>/log``: the real output of the pod's process (see :mod:`.kubelet`).
* Failure and delay injection (:mod:`.failures`) and a small control API under ``/_fake/``.

Every change is reported to ``on_change`` (the fake controller) and pushed to watchers.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import datetime
import logging
import secrets
import string
import uuid
import warnings
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp.web
import kmock
from kmock._internal import enums, parsing, rendering

from ipa_tasks.fake_kube_api.failures import FailureInjector
from ipa_tasks.fake_kube_api.logs import LogBuffer
from ipa_tasks.fake_kube_api.objects import (
    DEPLOYMENTS,
    JOBS,
    NAMESPACES,
    NODE_NAME,
    NODES,
    PODS,
    STATEFULSETS,
    api_version,
    metadata,
    now,
    rfc3339,
    rfc3339_nano,
)
from ipa_tasks.fake_kube_api.patching import PatchError, apply_patch, drop_nulls, patch_type
from ipa_tasks.fake_kube_api.pods import qos_class
from ipa_tasks.fake_kube_api.selection import SelectorError, object_matcher

log = logging.getLogger(__name__)

CONTROL_PREFIX = "/_fake/"
ObjectKey = tuple[kmock.resource, str | None, str]
LogSource = Callable[[str, str, str, str], LogBuffer | None]
Handler = Callable[[rendering.Request], Awaitable[aiohttp.web.StreamResponse]]


@dataclass(frozen=True)
class Change:
    """One stored change, as the fake controller sees it."""

    event: str  # ADDED, MODIFIED, DELETED
    resource: kmock.resource
    namespace: str | None
    name: str
    obj: dict[str, Any]
    propagation: str | None = None  # DeleteOptions.propagationPolicy of a DELETE


@dataclass(frozen=True)
class RequestRecord:
    """One served request (for assertions such as "the client retried the PATCH")."""

    method: str
    path: str
    query: str
    status: int
    time: str = field(default_factory=lambda: rfc3339_nano(now()))


def _error(status: int, reason: str, message: str, **details: Any) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=status, reason=reason, message=message, details=details or None)


_kmock_parse_path = parsing.parse_path


def _parse_path(path: str) -> parsing.ParsedPath:
    """kmock 0.8's URL parser, reading ``/api/v1/namespaces[/<name>[/status]]`` as the namespaces resource.

    kmock takes the segment after ``namespaces`` for a namespace and fails (500) on the bare list URL.
    """
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and (
        len(parts) <= 4 or (len(parts) == 5 and parts[4] in ("status", "finalize"))
    ):
        name = parts[3] if len(parts) > 3 else None
        subresource = parts[4] if len(parts) > 4 else None
        return parsing.ParsedPath("", "v1", "namespaces", None, name, subresource)
    return _kmock_parse_path(path)


# kmock's request parsing looks the function up in its module at each request; this is the only hook.
parsing.parse_path = _parse_path


def _flag(params: Mapping[str, str], name: str) -> bool:
    """A boolean query parameter as Go's ParseBool reads it (the Python client sends ``True``)."""
    return params.get(name, "").lower() in ("1", "t", "true")


def _random_suffix(length: int = 5) -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


class FakeKubeEmulator(kmock.KubernetesEmulator):
    """kmock's emulator with apiserver-like writes, selectors, pod logs and failure injection."""

    def __init__(
        self,
        *,
        failures: FailureInjector | None = None,
        max_history: int = 20,
        max_deleted: int = 500,
        max_recorded_requests: int = 5000,
    ) -> None:
        super().__init__()
        with warnings.catch_warnings():  # kmock 0.8 uses the deprecated importlib.resources.read_binary
            warnings.simplefilter("ignore", DeprecationWarning)
            self.resources.load_bundled()  # without it, discovery of /apis/apps/v1 etc. is a 404
        self.failures = failures or FailureInjector()
        self.on_change: Callable[[Change], None] | None = None
        self.log_source: LogSource | None = None
        self.request_log: collections.deque[RequestRecord] = collections.deque(maxlen=max_recorded_requests)
        self._max_history = max_history
        self._deleted_keys: collections.deque[ObjectKey] = collections.deque()
        self._max_deleted = max_deleted
        self._write_lock = asyncio.Lock()  # serialises read-compute-store of all writes
        self._resource_version = 0
        self._seed()

    # ----------------------------------------------------------------- store primitives (loop thread)

    def _seed(self) -> None:
        for name in ("default", "kube-system"):
            body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
            self._objects[NAMESPACES, None, name] = self._initialise(NAMESPACES, body, None)
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE_NAME}}
        node["status"] = {"conditions": [{"type": "Ready", "status": "True"}]}
        self._objects[NODES, None, NODE_NAME] = self._initialise(NODES, node, None)

    def _next_version(self) -> str:
        self._resource_version += 1
        return str(self._resource_version)

    def resource_info(self, resource: kmock.resource) -> kmock.ResourceInfo | None:
        """Discovery data of a resource (kind, namespaced, subresources), if it is known."""
        # Not `.get()`: kmock's ResourcesArray creates a blank entry on a missed lookup, like a defaultdict.
        return self.resources[resource] if resource in self.resources else None  # noqa: SIM401

    async def _serve_version(self, request: rendering.Request) -> rendering.Payload:
        payload = await super()._serve_version(request)
        # kmock names the core group's version "/v1"; a real server says "v1", and Go clients (Helm) find
        # no core kinds (ServiceAccount, Service) under the other name.
        if isinstance(payload, dict) and payload.get("groupVersion") == "/v1":
            payload["groupVersion"] = "v1"
        return payload

    def _has_subresource(self, resource: kmock.resource, subresource: str) -> bool:
        info = self.resource_info(resource)
        return info is not None and subresource in info.subresources

    def _current(self, key: ObjectKey) -> dict[str, Any] | None:
        if key not in self._objects or self._objects[key].deleted:
            return None
        return copy.deepcopy(self._objects[key].raw)

    def _initialise(
        self, resource: kmock.resource, body: dict[str, Any], namespace: str | None
    ) -> dict[str, Any]:
        """Server-side fields and defaults of a new object (mutates and returns ``body``)."""
        info = self.resource_info(resource)
        body.setdefault("apiVersion", api_version(resource))
        if info is not None and info.kind:
            body.setdefault("kind", info.kind)
        meta = body.setdefault("metadata", {})
        if namespace is not None:
            meta["namespace"] = namespace
        meta.update(
            uid=str(uuid.uuid4()),
            resourceVersion=self._next_version(),
            generation=1,
            creationTimestamp=rfc3339(),
        )
        if self._has_subresource(resource, "status"):
            body.pop("status", None)  # clients cannot create an object with a status
        spec = body.get("spec")
        if resource == PODS and isinstance(spec, dict):
            spec.setdefault("restartPolicy", "Always")
            body["status"] = {"phase": "Pending", "qosClass": qos_class(spec)}
        elif resource in (DEPLOYMENTS, STATEFULSETS) and isinstance(spec, dict):
            spec.setdefault("replicas", 1)
        elif resource == JOBS and isinstance(spec, dict):
            self._default_job(body, spec)
        elif resource == NAMESPACES:
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
            body["spec"] = {"finalizers": ["kubernetes"]}
            body["status"] = {"phase": "Active"}
        return body

    @staticmethod
    def _default_job(body: dict[str, Any], spec: dict[str, Any]) -> None:
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("completions", 1)
        spec.setdefault("parallelism", 1)
        uid = body["metadata"]["uid"]
        labels = {"batch.kubernetes.io/controller-uid": uid, "controller-uid": uid}
        labels |= {"batch.kubernetes.io/job-name": body["metadata"]["name"]}
        labels |= {"job-name": body["metadata"]["name"]}
        if not spec.get("manualSelector"):
            spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
        template_meta = spec.setdefault("template", {}).setdefault("metadata", {})
        template_meta["labels"] = {**(template_meta.get("labels") or {}), **labels}

    async def _put(self, key: ObjectKey, doc: dict[str, Any], event: str) -> None:
        """Store ``doc`` as the object's newest version and tell watchers (write lock held)."""
        async with self._lock:
            if key in self._objects:
                history = self._objects[key].history
                history.append(doc)
                if len(history) > self._max_history:
                    del history[: len(history) - self._max_history]
            else:
                self._objects[key] = doc
            await self._buses[key[0]].put({"type": event, "object": copy.deepcopy(doc)})

    async def _remove(self, key: ObjectKey) -> None:
        """Soft-delete (the history stays readable), forgetting the oldest deleted objects."""
        async with self._lock:
            last = copy.deepcopy(self._objects[key].raw)
            self._objects[key].delete()
            await self._buses[key[0]].put({"type": "DELETED", "object": last})
            self._deleted_keys.append(key)
            while len(self._deleted_keys) > self._max_deleted:
                old = self._deleted_keys.popleft()
                if old in self._objects and self._objects[old].deleted:
                    del self._objects[old]

    def _notify(self, change: Change) -> None:
        if self.on_change is not None:
            try:
                self.on_change(change)
            except Exception:  # a controller bug must not turn into a failed API call
                log.exception(
                    "fake controller failed on %s %s/%s", change.event, change.namespace, change.name
                )

    # ------------------------------------------------------------ internal API (controller, kubelet)

    async def get_object(
        self, resource: kmock.resource, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        return self._current((resource, namespace, name))

    async def list_objects(
        self, resource: kmock.resource, namespace: str | None = None
    ) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(obj.raw)
            for (res, ns, _), obj in list(self._objects.items())
            if res == resource and not obj.deleted and (namespace is None or ns == namespace)
        ]

    async def history(
        self, resource: kmock.resource, namespace: str | None, name: str
    ) -> list[dict[str, Any] | None]:
        key = (resource, namespace, name)
        if key not in self._objects:
            return []
        return [None if v is None else copy.deepcopy(dict(v.raw)) for v in self._objects[key].history]

    async def histories(
        self, resource: kmock.resource, namespace: str | None = None
    ) -> dict[str, list[dict[str, Any] | None]]:
        """Every retained version of every object of a resource, deleted ones included (by name)."""
        return {
            name: [None if v is None else copy.deepcopy(dict(v.raw)) for v in obj.history]
            for (res, ns, name), obj in list(self._objects.items())
            if res == resource and (namespace is None or ns == namespace)
        }

    async def create_object(
        self, resource: kmock.resource, namespace: str | None, body: dict[str, Any]
    ) -> dict[str, Any]:
        """Create as a controller would (no change notification: the caller drives the object)."""
        async with self._write_lock:
            doc = self._initialise(resource, drop_nulls(copy.deepcopy(body)), namespace)
            key = (resource, namespace, doc["metadata"]["name"])
            if self._current(key) is not None:
                raise self._already_exists(resource, key[2])
            await self._put(key, doc, "ADDED")
            return copy.deepcopy(doc)

    async def update_object(
        self,
        resource: kmock.resource,
        namespace: str | None,
        name: str,
        mutate: Callable[[dict[str, Any]], None],
        *,
        uid: str | None = None,
    ) -> dict[str, Any] | None:
        """Apply ``mutate`` to a copy and store it if it changed; ``None`` if gone (or another uid)."""
        key = (resource, namespace, name)
        async with self._write_lock:
            current = self._current(key)
            if current is None or (uid is not None and metadata(current).get("uid") != uid):
                return None
            new = copy.deepcopy(current)
            mutate(new)
            if new != current:
                new["metadata"]["resourceVersion"] = self._next_version()
                await self._put(key, new, "MODIFIED")
            return new

    async def delete_object(
        self, resource: kmock.resource, namespace: str | None, name: str, *, uid: str | None = None
    ) -> dict[str, Any] | None:
        key = (resource, namespace, name)
        async with self._write_lock:
            current = self._current(key)
            if current is None or (uid is not None and metadata(current).get("uid") != uid):
                return None
            await self._remove(key)
            return current

    # ------------------------------------------------------------------------------- HTTP dispatch

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        if not isinstance(exc, kmock.KubernetesError):
            return await super()._render_error(exc)
        # A real server's Status, without the Python traceback kmock would put into `details`.
        status: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Status",
            "metadata": {},
            "status": "Failure",
            "message": exc.message or "",
            "reason": exc.reason or "",
            "code": exc.status,
        }
        if exc.details:
            status["details"] = exc.details
        return aiohttp.web.json_response(status, status=exc.status)

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        status = 500
        try:
            response = await self._dispatch(request)
            status = response.status
            return response
        finally:
            self.request_log.append(
                RequestRecord(str(request.method.value), request.url.path, request.url.query_string, status)
            )
            self._forget_kmock_records()

    def _forget_kmock_records(self) -> None:
        # kmock keeps every request (with body) for assertions; a long-running demo server would grow
        # without bound, and this project asserts on `request_log` instead.
        if len(self._requests) > 200:
            del self._requests[:-100]
            for payload in self._payloads:
                del payload._requests[:]
            for errors in self._errors:
                del errors[:]

    async def _dispatch(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        path = request.url.path
        if path.startswith(CONTROL_PREFIX):
            return await self._serve_control(request)
        method = str(request.method.value)
        if (rule := self.failures.take(method, path)) is not None:
            if rule.delay_s > 0:
                await asyncio.sleep(rule.delay_s)
            if rule.fails:
                message = rule.message or f"injected failure: {rule.status} for {method} {path}"
                return await self._render_error(_error(rule.status, rule.reason, message, injected=True))
        if request.resource is None:
            if path == "/version/":  # the Python client's VersionApi adds the slash; kmock serves /version
                return aiohttp.web.json_response(await self._serve_server_version(request))
            return await super()._handle(request)
        if request.action == enums.action.LIST and _flag(request.params, "watch"):
            # kmock only recognises `watch=true`; the Python client sends `watch=True`.
            object.__setattr__(request, "action", enums.action.WATCH)  # Request is a frozen attrs class
        try:
            handler = self._route(request)
            if handler is not None:
                return await handler(request)
            if request.action in (enums.action.LIST, enums.action.WATCH):
                object_matcher(request.params)  # 400 on a bad selector before kmock serves it
            return await super()._handle(request)
        except SelectorError as exc:
            return await self._render_error(_error(400, "BadRequest", str(exc)))
        except kmock.KubernetesError as exc:
            return await self._render_error(exc)

    def _route(self, request: rendering.Request) -> Handler | None:
        method = str(request.method.value)
        if request.name is None:
            if request.action == enums.action.CREATE:
                return self._serve_create_object
            return self._serve_delete_collection if method == "DELETE" else None
        if method == "PUT":
            return self._serve_replace
        routes: dict[enums.action | None, Handler] = {
            enums.action.FETCH: self._serve_get,
            enums.action.UPDATE: self._serve_patch,
            enums.action.DELETE: self._serve_delete_object,
        }
        return routes.get(request.action)

    # ------------------------------------------------------------------------------ HTTP handlers

    def _key(self, request: rendering.Request) -> ObjectKey:
        assert request.resource is not None and request.name is not None
        return (request.resource, self._namespace_of(request), request.name)

    def _namespace_of(self, request: rendering.Request) -> str | None:
        assert request.resource is not None
        info = self.resource_info(request.resource)
        namespaced = info.namespaced if info is not None else request.namespace is not None
        if namespaced and request.namespace is None:
            raise _error(404, "NotFound", "the server could not find the requested resource")
        return request.namespace if namespaced else None

    def _qualified(self, resource: kmock.resource) -> str:
        return f"{resource.plural}.{resource.group}" if resource.group else str(resource.plural)

    def _not_found(self, resource: kmock.resource, name: str) -> kmock.KubernetesError:
        message = f'{self._qualified(resource)} "{name}" not found'
        return _error(404, "NotFound", message, name=name, kind=resource.plural)

    def _already_exists(self, resource: kmock.resource, name: str) -> kmock.KubernetesError:
        message = f'{self._qualified(resource)} "{name}" already exists'
        return _error(409, "AlreadyExists", message, name=name, kind=resource.plural)

    def _existing(self, request: rendering.Request) -> dict[str, Any]:
        key = self._key(request)
        current = self._current(key)
        if current is None:
            raise self._not_found(key[0], key[2])
        return current

    async def _serve_get(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        current = self._existing(request)
        subresource = request.subresource
        if subresource == "log" and request.resource == PODS:
            return await self._serve_pod_log(request, current)
        if subresource in (None, "status") or (subresource == "scale" and self._scalable(request)):
            return aiohttp.web.json_response(self._view(current, subresource))
        raise _error(405, "MethodNotAllowed", f"the fake API server does not serve {subresource!r}")

    async def _serve_create_object(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        assert request.resource is not None
        if not isinstance(request.data, dict):
            raise _error(400, "BadRequest", "the body of the request was in an unknown format")
        namespace = self._namespace_of(request)
        body = drop_nulls(copy.deepcopy(request.data))
        meta = body.setdefault("metadata", {})
        if namespace is not None and meta.get("namespace") not in (None, namespace):
            message = "the namespace of the provided object does not match the namespace sent on the request"
            raise _error(400, "BadRequest", message)
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise _error(
                    422, "Invalid", "metadata.name: Required value: name or generateName is required"
                )
            meta["name"] = meta["generateName"] + _random_suffix()
        key = (request.resource, namespace, meta["name"])
        async with self._write_lock:
            if self._current(key) is not None:
                raise self._already_exists(request.resource, meta["name"])
            doc = self._initialise(request.resource, body, namespace)
            await self._put(key, doc, "ADDED")
        self._notify(Change("ADDED", request.resource, namespace, meta["name"], copy.deepcopy(doc)))
        return aiohttp.web.json_response(doc, status=201)

    async def _serve_patch(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        content_type = next((v for k, v in request.headers.items() if k.lower() == "content-type"), "")
        if "apply-patch" in content_type:
            raise _error(
                415, "UnsupportedMediaType", "server-side apply is not supported by the fake API server"
            )
        kind = patch_type(content_type, request.data)
        return await self._update(request, lambda view: apply_patch(view, request.data, kind))

    async def _serve_replace(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if not isinstance(request.data, dict):
            raise _error(400, "BadRequest", "the body of the request was in an unknown format")
        return await self._update(request, lambda view: drop_nulls(copy.deepcopy(request.data)))

    def _scalable(self, request: rendering.Request) -> bool:
        return request.resource is not None and self._has_subresource(request.resource, "scale")

    def _view(self, obj: dict[str, Any], subresource: str | None) -> dict[str, Any]:
        """What a GET/PATCH of ``subresource`` shows of ``obj`` (a Scale for ``scale``)."""
        if subresource != "scale":
            return obj
        meta = metadata(obj)
        selector = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        return {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {
                k: meta[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if k in meta
            },
            "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
            "status": {
                "replicas": (obj.get("status") or {}).get("replicas", 0),
                "selector": ",".join(f"{k}={v}" for k, v in selector.items()),
            },
        }

    def _merge_back(
        self,
        current: dict[str, Any],
        changed: dict[str, Any],
        resource: kmock.resource,
        subresource: str | None,
    ) -> dict[str, Any]:
        """The stored object after a write to ``subresource`` produced ``changed`` (of its view)."""
        new = copy.deepcopy(current)
        if subresource == "scale":
            replicas = (changed.get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or replicas < 0:
                raise _error(422, "Invalid", f"spec.replicas: Invalid value: {replicas!r}")
            new.setdefault("spec", {})["replicas"] = replicas
            return new
        if subresource == "status":
            if "status" in changed:
                new["status"] = changed["status"]
            else:
                new.pop("status", None)
            return new
        if subresource is not None:
            raise _error(405, "MethodNotAllowed", f"the fake API server cannot write {subresource!r}")
        new = changed
        meta, old_meta = new.setdefault("metadata", {}), metadata(current)
        for name in ("name", "namespace", "uid", "creationTimestamp", "generation", "deletionTimestamp"):
            if name in old_meta:
                meta[name] = old_meta[name]
        for name in ("apiVersion", "kind"):
            new.setdefault(name, current.get(name))
        if self._has_subresource(resource, "status"):
            if "status" in current:  # the main resource cannot change status, as on a real server
                new["status"] = current["status"]
            else:
                new.pop("status", None)
        return new

    async def _update(
        self, request: rendering.Request, compute: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> aiohttp.web.StreamResponse:
        assert request.resource is not None
        key = self._key(request)
        subresource = request.subresource
        if subresource == "scale" and not self._scalable(request):
            raise _error(404, "NotFound", f"{request.resource.plural} have no scale subresource")
        async with self._write_lock:
            current = self._existing(request)
            view = self._view(current, subresource)
            try:
                changed = compute(copy.deepcopy(view))
            except PatchError as exc:
                raise _error(422, "Invalid", str(exc)) from exc
            if not isinstance(changed, dict):
                raise _error(422, "Invalid", "the patch does not produce an object")
            wanted = metadata(changed).get("resourceVersion")
            if wanted is not None and str(wanted) != metadata(current).get("resourceVersion"):
                message = (
                    f'Operation cannot be fulfilled on {self._qualified(key[0])} "{key[2]}": the object has '
                    "been modified; please apply your changes to the latest version and try again"
                )
                raise _error(409, "Conflict", message, name=key[2], kind=key[0].plural)
            new = self._merge_back(current, changed, key[0], subresource)
            new["metadata"]["resourceVersion"] = metadata(current).get("resourceVersion")
            if new == current:  # a no-op write keeps the resourceVersion, as on a real server
                return aiohttp.web.json_response(self._view(current, subresource))
            if new.get("spec") != current.get("spec"):
                new["metadata"]["generation"] = int(metadata(current).get("generation", 1)) + 1
            new["metadata"]["resourceVersion"] = self._next_version()
            released = metadata(new).get("deletionTimestamp") and not metadata(new).get("finalizers")
            await self._put(key, new, "MODIFIED")
            if released:  # the last finalizer is gone: the pending deletion completes now
                await self._remove(key)
        self._notify(
            Change("DELETED" if released else "MODIFIED", key[0], key[1], key[2], copy.deepcopy(new))
        )
        return aiohttp.web.json_response(self._view(new, subresource))

    def _propagation(self, request: rendering.Request) -> str | None:
        options = request.data if isinstance(request.data, dict) else {}
        return request.params.get("propagationPolicy") or options.get("propagationPolicy")

    async def _serve_delete_object(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        assert request.resource is not None
        if request.subresource is not None:
            raise _error(405, "MethodNotAllowed", f"cannot delete {request.subresource!r}")
        key = self._key(request)
        async with self._write_lock:
            current = self._existing(request)
            gone = await self._delete_locked(key, current)
        event = "DELETED" if gone else "MODIFIED"
        self._notify(
            Change(event, key[0], key[1], key[2], copy.deepcopy(current), self._propagation(request))
        )
        if request.resource == PODS or not gone:  # a real server returns the pod itself, others a Status
            return aiohttp.web.json_response(current)
        details = {
            "name": key[2],
            "group": key[0].group,
            "kind": key[0].plural,
            "uid": metadata(current)["uid"],
        }
        return aiohttp.web.json_response(
            {"kind": "Status", "apiVersion": "v1", "status": "Success", "details": details}
        )

    async def _delete_locked(self, key: ObjectKey, current: dict[str, Any]) -> bool:
        """Delete, or only mark for deletion while finalizers remain (mutates ``current``)."""
        meta = current["metadata"]
        if not meta.get("finalizers"):
            meta.setdefault("deletionTimestamp", rfc3339())
            await self._remove(key)
            return True
        if "deletionTimestamp" not in meta:
            meta["deletionTimestamp"] = rfc3339()
            meta["resourceVersion"] = self._next_version()
            await self._put(key, copy.deepcopy(current), "MODIFIED")
        return False

    async def _serve_delete_collection(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        assert request.resource is not None
        namespace = self._namespace_of(request)
        matches = object_matcher(request.params)
        deleted: list[tuple[ObjectKey, dict[str, Any], bool]] = []
        async with self._write_lock:
            for obj in await self.list_objects(request.resource, namespace):
                if matches(obj):
                    key = (request.resource, namespace, metadata(obj)["name"])
                    deleted.append((key, obj, await self._delete_locked(key, obj)))
        for key, obj, gone in deleted:
            self._notify(Change("DELETED" if gone else "MODIFIED", *key, obj, self._propagation(request)))
        return aiohttp.web.json_response(self._list_payload(request.resource, [obj for _, obj, _ in deleted]))

    # ------------------------------------------------------------------------------- LIST / WATCH

    def _list_payload(self, resource: kmock.resource, items: list[dict[str, Any]]) -> dict[str, Any]:
        info = self.resource_info(resource)
        return {
            "apiVersion": api_version(resource),
            "kind": f"{info.kind}List" if info is not None and info.kind else "List",
            "metadata": {"resourceVersion": str(self._resource_version)},
            "items": items,
        }

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        payload = await super()._serve_list(request)
        assert request.resource is not None and isinstance(payload, dict)
        matches = object_matcher(request.params)
        return self._list_payload(request.resource, [item for item in payload["items"] if matches(item)])

    async def _serve_watch(self, request: rendering.Request) -> Any:
        matches = object_matcher(request.params)
        timeout = float(request.params.get("timeoutSeconds") or 0)
        deadline = asyncio.get_running_loop().time() + timeout if timeout > 0 else None
        stream = super()._serve_watch(request)
        try:
            while True:
                remaining = None if deadline is None else deadline - asyncio.get_running_loop().time()
                if remaining is not None and remaining <= 0:
                    return
                try:
                    event = await asyncio.wait_for(anext(stream), remaining)
                except (StopAsyncIteration, TimeoutError):
                    return
                if isinstance(event, dict) and not matches(event.get("object") or {}):
                    continue
                yield event
        finally:
            await stream.aclose()

    # ---------------------------------------------------------------------------------- pod logs

    def _log_container(self, request: rendering.Request, pod: dict[str, Any]) -> str:
        spec = pod.get("spec") or {}
        names = [c["name"] for c in spec.get("containers") or []]
        init_names = [c["name"] for c in spec.get("initContainers") or []]
        name = metadata(pod)["name"]
        container = request.params.get("container")
        if not container:
            if len(names) != 1:
                choices = " ".join(names)
                raise _error(
                    400,
                    "BadRequest",
                    f"a container name must be specified for pod {name}, choose one of: [{choices}]",
                )
            container = names[0]
        if container not in names + init_names:
            raise _error(400, "BadRequest", f"container {container} is not valid for pod {name}")
        if _flag(request.params, "previous"):
            raise _error(
                400, "BadRequest", f'previous terminated container "{container}" in pod "{name}" not found'
            )
        return container

    async def _serve_pod_log(
        self, request: rendering.Request, pod: dict[str, Any]
    ) -> aiohttp.web.StreamResponse:
        container = self._log_container(request, pod)
        meta = metadata(pod)
        buffer = (
            self.log_source(meta["namespace"], meta["name"], meta["uid"], container)
            if self.log_source
            else None
        )
        if buffer is None:
            message = (
                f'container "{container}" in pod "{meta["name"]}" is waiting to start: ContainerCreating'
            )
            raise _error(400, "BadRequest", message)
        params = request.params
        since_seconds = int(params["sinceSeconds"]) if params.get("sinceSeconds") else None
        since = now() - datetime.timedelta(seconds=since_seconds) if since_seconds else None
        tail = int(params["tailLines"]) if params.get("tailLines") else None
        timestamps = _flag(params, "timestamps")
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
        assert request._raw_request is not None
        await response.prepare(request._raw_request)
        try:
            async for stamp, line in buffer.read(follow=_flag(params, "follow"), since=since, tail=tail):
                text = f"{rfc3339_nano(stamp)} {line}\n" if timestamps else f"{line}\n"
                await response.write(text.encode())
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client stopped following the log
        return response

    # ---------------------------------------------------------------------------- control API

    async def _serve_control(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        route = (str(request.method.value), request.url.path[len(CONTROL_PREFIX) :].strip("/"))
        body = request.data if isinstance(request.data, dict) else {}
        match route:
            case ("GET", "healthz"):
                return aiohttp.web.json_response({"ok": True})
            case ("GET", "failures"):
                return aiohttp.web.json_response(self.failures.pending())
            case ("POST", "failures"):
                if "path" not in body:
                    return aiohttp.web.json_response({"error": "'path' is required"}, status=400)
                rule = self.failures.add(
                    body.get("method", "*"),
                    body["path"],
                    int(body.get("status", 500)),
                    int(body.get("times", 1)),
                    body.get("message"),
                    float(body.get("delay_s", 0.0)),
                )
                return aiohttp.web.json_response(rule.describe(), status=201)
            case ("DELETE", "failures"):
                self.failures.clear()
                return aiohttp.web.json_response({"ok": True})
            case ("GET", "requests"):
                return aiohttp.web.json_response([asdict(r) for r in self.request_log])
        return aiohttp.web.json_response({"error": f"unknown control endpoint {route}"}, status=404)
