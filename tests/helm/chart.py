"""The chart through real Helm (the Go library inside the helm-sdkpy wheel): lint it, and install it into
the fake Kubernetes API server, which is how these tests render it (helm-sdkpy has no ``template``).

Helm keeps its release records in memory (``HELM_DRIVER=memory``): the fake stores objects as JSON, and
Helm writes its release Secrets as protobuf. A Go library reads the environment the process started
with, not later changes to it, so every Helm call runs in a child process started with the variable
(``python -m tests.helm.chart``), which prints the result as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[2] / "helm"
WARNING = 2  # Helm's lint severities: 1 info, 2 warning, 3 error


class HelmFailed(RuntimeError):
    """Helm refused: the message is Helm's."""


def lint(kubeconfig: Path, namespace: str, chart: Path = CHART) -> dict[str, Any]:
    return _helm("lint", kubeconfig, namespace, chart, {})


def install(
    kubeconfig: Path, namespace: str, values: dict[str, Any] | None = None, chart: Path = CHART
) -> list[dict[str, Any]]:
    """Install the chart (release ``ipa``) with ``values``; the objects it rendered, as Helm sent them."""
    done = _helm("install", kubeconfig, namespace, chart, values or {})
    return [doc for doc in yaml.safe_load_all(done["manifest"]) if doc]


def of_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


def _helm(action: str, kubeconfig: Path, namespace: str, chart: Path, values: dict[str, Any]) -> Any:
    command = [sys.executable, "-m", "tests.helm.chart", action, str(kubeconfig), namespace, str(chart)]
    done = subprocess.run(
        [*command, json.dumps(values)],
        env={**os.environ, "HELM_DRIVER": "memory"},
        cwd=CHART.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise HelmFailed(done.stderr.strip() or f"exit status {done.returncode}, no message")
    return json.loads(done.stdout)


def main() -> None:
    import helm_sdkpy

    parser = argparse.ArgumentParser(description="one Helm action, its result as JSON on stdout")
    parser.add_argument("action", choices=["lint", "install"])
    for name in ("kubeconfig", "namespace", "chart", "values"):
        parser.add_argument(name)
    args = parser.parse_args()
    config = helm_sdkpy.Configuration(namespace=args.namespace, kubeconfig=args.kubeconfig)
    try:
        if args.action == "lint":
            result = asyncio.run(helm_sdkpy.Lint(config).run(args.chart))
        else:
            install = helm_sdkpy.Install(config).run(
                "ipa", args.chart, values=json.loads(args.values), wait=False, timeout=60
            )
            result = asyncio.run(install)
    except helm_sdkpy.HelmError as exc:
        sys.exit(str(exc))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
