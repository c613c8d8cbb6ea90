"""Where the serving runtime keeps its files under ``IPA_HOME``, named once: the router writes the request
counts the adaptation loop reads, the runtime says where it listens, and the targets find both here.

    serving/runtime.json                  the local runtime's admin URL and routers (while it runs)
    serving/<pipeline>/requests.csv       requests per second, as the router counted them
    serving/<pipeline>/logs/              the stage servers' logs
"""

from __future__ import annotations

from pathlib import Path

RUNTIME_PORT, ROUTER_PORT_BASE = 18400, 18500
"""Where the local runtime listens by default on 127.0.0.1: its admin API, and the first pipeline's router
(the i-th pipeline's is the base + i)."""


def pipeline_dir(home: Path, pipeline: str) -> Path:
    return Path(home) / "serving" / pipeline


def request_counts_file(home: Path, pipeline: str) -> Path:
    """``timestamp,requests`` rows, one per second (:mod:`ipa_tasks.monitoring.rate_file`)."""
    return pipeline_dir(home, pipeline) / "requests.csv"


def runtime_file(home: Path) -> Path:
    """Where the running local runtime says where its admin API and routers are."""
    return Path(home) / "serving" / "runtime.json"
