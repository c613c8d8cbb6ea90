"""Past adaptation decisions for the agent: from MLflow (the day runs' ``decisions.csv``), else from the
day tables in ``IPA_HOME``, newest first."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ipa_tasks.adaptation.decisions import (
    DAY_KIND,
    EXPERIMENT,
    TABLE_ARTIFACT,
    read_decisions,
)
from ipa_tasks.optimizer.plan import json_safe
from ipa_tasks.tracking import local_store, mlflow_client, runs_filter, unreachable

PROBE_TIMEOUT_S = 2.0
FIELDS = (
    "time",
    "observed_peak_rps",
    "forecast_rps",
    "forecaster",
    "policy",
    "plan_status",
    "degraded",
    "reason",
    "configuration",
    "running",
    "objective",
    "accuracy",
    "accuracy_term",
    "cost_term",
    "batch_term",
    "change_term",
    "total_cores",
    "latency_s",
    "sla_s",
    "apply_status",
    "message",
)
"""What a decision says; the four ``*_term`` columns are the objective's terms as the loop computed them."""


def recent_decisions(
    home: Path | None, tracking_uri: str, pipeline: str, limit: int, days: int = 2
) -> tuple[list[dict[str, Any]], str]:
    """The last ``limit`` decisions for ``pipeline`` and where they came from, in words."""
    rows: list[dict[str, Any]] = []
    notes = []
    store = local_store(tracking_uri) if tracking_uri else None
    why = "" if not tracking_uri or store is not None else unreachable(tracking_uri, PROBE_TIMEOUT_S)
    if not tracking_uri or (store is not None and not store.exists()):
        notes.append("no MLflow store yet")  # reading would create an empty one
    elif why:
        notes.append(f"MLflow at {tracking_uri} could not be reached ({why})")
    else:
        try:
            rows = _from_mlflow(tracking_uri, pipeline, days)
            notes.append(f"MLflow experiment {EXPERIMENT} at {tracking_uri}")
        except Exception as exc:  # a broken store or artifact: the local record still answers
            notes.append(f"MLflow could not be read ({type(exc).__name__}: {exc})")
    if not rows and home is not None:
        rows = _from_day_tables(home, pipeline, days)
        notes.append(f"day tables in {home / 'adaptation' / pipeline / 'decisions'}")
    source = "; ".join(notes)
    rows.sort(key=lambda row: row["time"], reverse=True)
    return [_plain(row) for row in rows[:limit]], source


def _from_mlflow(tracking_uri: str, pipeline: str, days: int) -> list[dict[str, Any]]:
    client = mlflow_client(tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return []
    runs = client.search_runs(
        [experiment.experiment_id],
        runs_filter(DAY_KIND, pipeline),
        order_by=["tags.`ipa.date` DESC"],
        max_results=days,
    )
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        for run in runs:
            path = Path(client.download_artifacts(run.info.run_id, TABLE_ARTIFACT, folder))
            rows += [
                {**row, "mlflow_run_id": run.info.run_id} for row in read_decisions(path).to_dict("records")
            ]
    return rows


def _from_day_tables(home: Path, pipeline: str, days: int) -> list[dict[str, Any]]:
    from ipa_tasks.adaptation.overview import read_window, window_days

    today = datetime.now(UTC).date()
    return read_window(home, pipeline, window_days(today, days)).to_dict("records")


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    kept = {key: row.get(key) for key in (*FIELDS, "mlflow_run_id") if key in row}
    return json_safe(kept)
