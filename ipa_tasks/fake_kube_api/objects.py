"""Shared vocabulary of the fake API server: resource ids, timestamps, object-shape helpers."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

import kmock

PODS = kmock.resource("", "v1", "pods")
EVENTS = kmock.resource("", "v1", "events")
CONFIGMAPS = kmock.resource("", "v1", "configmaps")
SECRETS = kmock.resource("", "v1", "secrets")
NAMESPACES = kmock.resource("", "v1", "namespaces")
NODES = kmock.resource("", "v1", "nodes")
DEPLOYMENTS = kmock.resource("apps", "v1", "deployments")
STATEFULSETS = kmock.resource("apps", "v1", "statefulsets")
REPLICASETS = kmock.resource("apps", "v1", "replicasets")
JOBS = kmock.resource("batch", "v1", "jobs")

# Workloads whose status the fake controller derives from `spec.replicas`.
REPLICATED = (DEPLOYMENTS, STATEFULSETS, REPLICASETS)

NODE_NAME = "fake-node"


def parse_resource(spec: str | kmock.resource) -> kmock.resource:
    """``"v1/pods"``, ``"apps/v1/deployments"`` or a kmock resource -> a kmock resource."""
    return spec if isinstance(spec, kmock.resource) else kmock.resource(spec)


def api_version(resource: kmock.resource) -> str:
    """``apiVersion`` of a resource's objects: ``v1`` for the core group, else ``group/version``."""
    return f"{resource.group}/{resource.version}" if resource.group else str(resource.version)


def now() -> datetime.datetime:
    return datetime.datetime.now(tz=datetime.UTC)


def rfc3339(moment: datetime.datetime | None = None) -> str:
    """Second-precision RFC 3339 timestamp, the format of ``metav1.Time`` fields."""
    return (moment or now()).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_nano(moment: datetime.datetime) -> str:
    """Nanosecond RFC 3339 timestamp, the format the kubelet prefixes log lines with."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f000Z")


def metadata(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def spec(obj: Mapping[str, Any]) -> dict[str, Any]:
    value = obj.get("spec")
    return value if isinstance(value, dict) else {}


def condition(
    kind: str, status: bool, reason: str | None = None, message: str | None = None
) -> dict[str, Any]:
    """A status condition entry as controllers write them."""
    entry: dict[str, Any] = {
        "type": kind,
        "status": "True" if status else "False",
        "lastTransitionTime": rfc3339(),
    }
    if reason:
        entry["reason"] = reason
    if message:
        entry["message"] = message
    return entry
