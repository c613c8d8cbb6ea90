"""Patch semantics of the fake API server: strategic merge, JSON merge, JSON patch, and diffs.

A real kube-apiserver merges lists such as ``containers`` or ``env`` item by item on a merge key when it
receives a strategic-merge patch (what the official Python client sends for a dict body). kmock's own
merge replaces whole lists, which would silently drop a container's image when only its ``env`` is
patched. This module computes the exact merged document, which the emulator then stores as is.

Only the merge keys of the built-in types a serving/profiling project touches are known (no OpenAPI
schema is loaded), and of the SMP directives only ``$patch: replace|delete`` is honoured.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import jsonpatch

# Merge keys of list fields, by field name (the OpenAPI `x-kubernetes-patch-merge-key`).
# A list field that is not named here is replaced wholesale, as for atomic lists in Kubernetes.
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "conditions": "type",
    "ownerReferences": "uid",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
}
# `ports` is keyed by `containerPort` in containers but by `port` in Services.
PORT_MERGE_KEYS: tuple[str, ...] = ("containerPort", "port")

STRATEGIC = "strategic-merge-patch"
JSON_PATCH = "json-patch"
MERGE_PATCH = "merge-patch"


class PatchError(ValueError):
    """The patch body cannot be applied (the API server answers 422/400)."""


def patch_type(content_type: str, body: Any) -> str:
    """The patch flavour from the request's Content-Type (the client picks it from the body's type)."""
    lowered = content_type.lower()
    if "json-patch" in lowered or isinstance(body, list):
        return JSON_PATCH
    if "strategic-merge-patch" in lowered:
        return STRATEGIC
    return MERGE_PATCH


def apply_patch(original: Mapping[str, Any], body: Any, kind: str) -> dict[str, Any]:
    """Return a new document: ``original`` with the patch ``body`` of flavour ``kind`` applied."""
    if kind == JSON_PATCH:
        if not isinstance(body, list):
            raise PatchError("a JSON patch must be a list of operations")
        try:
            return jsonpatch.apply_patch(copy.deepcopy(dict(original)), body)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            raise PatchError(str(exc)) from exc
    if not isinstance(body, Mapping):
        raise PatchError("a merge patch must be a JSON object")
    return strategic_merge(original, body) if kind == STRATEGIC else json_merge(original, body)


def json_merge(original: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: dicts merge recursively, ``null`` deletes, everything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result: dict[str, Any] = dict(copy.deepcopy(original)) if isinstance(original, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = json_merge(result.get(key), value)
    return result


def strategic_merge(original: Any, patch: Any, field: str | None = None) -> Any:
    """Kubernetes strategic merge of ``patch`` into ``original`` (``field`` is the key holding them)."""
    if isinstance(patch, Mapping):
        if patch.get("$patch") == "replace":
            return _strip_directives(patch)
        base: dict[str, Any] = dict(copy.deepcopy(original)) if isinstance(original, Mapping) else {}
        for key, value in patch.items():
            if key.startswith("$"):  # $setElementOrder/..., $retainKeys: ordering/pruning hints only
                continue
            if value is None:
                base.pop(key, None)
            elif isinstance(value, list):
                base[key] = _merge_list(base.get(key), value, key)
            else:
                base[key] = strategic_merge(base.get(key), value, key)
        return base
    if isinstance(patch, list):
        return _merge_list(original, patch, field)
    return copy.deepcopy(patch)


def _merge_key(field: str | None, items: list[Any]) -> str | None:
    if field == "ports":
        for candidate in PORT_MERGE_KEYS:
            if any(isinstance(item, Mapping) and candidate in item for item in items):
                return candidate
        return None
    return MERGE_KEYS.get(field or "")


def _merge_list(original: Any, patch: list[Any], field: str | None) -> list[Any]:
    if any(isinstance(item, Mapping) and item.get("$patch") == "replace" for item in patch):
        return [_strip_directives(item) for item in patch if not _is_directive_only(item)]
    key = _merge_key(field, patch)
    if key is None or not isinstance(original, list):
        return [_strip_directives(item) for item in patch if not _is_delete(item)]
    result: list[Any] = copy.deepcopy(original)
    for item in patch:
        if not isinstance(item, Mapping) or key not in item:
            result.append(copy.deepcopy(item))
            continue
        index = next(
            (i for i, old in enumerate(result) if isinstance(old, Mapping) and old.get(key) == item[key]),
            None,
        )
        if _is_delete(item):
            if index is not None:
                del result[index]
        elif index is None:
            result.append(_strip_directives(item))
        else:
            result[index] = strategic_merge(result[index], item)
    return result


def _is_delete(item: Any) -> bool:
    return isinstance(item, Mapping) and item.get("$patch") == "delete"


def _is_directive_only(item: Any) -> bool:
    return isinstance(item, Mapping) and set(item) == {"$patch"}


def _strip_directives(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _strip_directives(v) for k, v in value.items() if not str(k).startswith("$")}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return copy.deepcopy(value)


def drop_nulls(value: Any) -> Any:
    """Remove ``null`` members recursively, as decoding into Go structs does on a real server."""
    if isinstance(value, Mapping):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value
