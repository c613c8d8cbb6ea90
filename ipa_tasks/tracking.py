"""MLflow logging of profiling rounds: one parent run per round, one child run per profiled variant.

Every function takes the tracking URI explicitly and keeps no state between calls, because the profiling
DAG's mapped tasks run in separate processes: the parent run id travels through XCom and each child is
attached to it with the ``mlflow.parentRunId`` tag (not ``start_run(nested=True)``, which needs the parent
active in the same process). The default store is SQLite with a local artifact folder
(:func:`default_tracking_uri`).

Run layout::

    experiment <name>
    └── parent  "profile <pipeline> <UTC time>"   tags ipa.pipeline, ipa.kind=profiling-round
        │   params    the round's parameters (batch sizes, cores, repetitions, ...)
        │   metrics   accuracy_gap_mean, accuracy_gap_mean_abs, accuracy_gap_max_abs, n_configurations
        │             + the numeric summary given at the end (variants_profiled, quarantined, ...)
        │   tags      ipa.<key> for the non-numeric summary values
        │   artifacts pipeline_accuracy/measured_vs_product.csv, pipeline_accuracy/measured_vs_product.png
        └── child   "<stage>/<variant>"   tags mlflow.parentRunId, ipa.pipeline, ipa.stage, ipa.variant,
                                                ipa.kind=variant-profile, ipa.source, ipa.host
                params    stage, variant, cores ("1,2,4"), batch_sizes ("1,2,4,8"), n_batch_sizes
                metrics   <column>_c<cores> with step = batch size, for column in latency_p50_s,
                          latency_p95_s, latency_p99_s, throughput_rps, memory_mb
                          accuracy; fit_r2_<q>_c<cores>, fit_max_rel_error_<q>_c<cores> for q in p50/p95/p99
                artifacts profile.csv (the variant's rows of the profile table), fits.csv (the latency
                          model's coefficients), latency_throughput.png
        └── child   "<stage>/<variant> (quarantined)"  status FAILED, tag ipa.outcome=quarantined: a
                    table that failed its checks; artifacts gx_report.json, check_summary.txt and
                    profile_quarantined.csv

mlflow, matplotlib and pandas are imported inside the functions so that DAG files importing this module
stay cheap to parse.
"""

from __future__ import annotations

import math
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlparse

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Run

STEP_METRIC_COLUMNS = ("latency_p50_s", "latency_p95_s", "latency_p99_s", "throughput_rps", "memory_mb")
"""Profile columns logged per core count with ``step = batch_size``."""
_PROFILE_COLUMNS_USED = ("pipeline", "stage", "variant", "batch_size", "cores", *STEP_METRIC_COLUMNS)
_GAP_COLUMNS = ("measured", "product", "gap")
PROFILING_EXPERIMENT = "ipa-profiling"
"""The experiment of the ``ipa_profile`` DAG's rounds."""
ROUND_KIND = "profiling-round"
VARIANT_KIND = "variant-profile"
GAP_ARTIFACT_DIR = "pipeline_accuracy"
_RUN_INFO_COLUMNS = ("run_id", "run_name", "status", "start_time", "end_time")

RunStatus = Literal["FINISHED", "FAILED"]


def default_tracking_uri(home: Path) -> str:
    """The store used when nothing is configured: ``sqlite:///<home>/mlflow.db``.

    Artifacts of experiments created by this module go next to the database, in ``<home>/mlartifacts``.
    """
    return f"sqlite:///{Path(home).resolve() / 'mlflow.db'}"


def artifact_location_for(tracking_uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: ``mlartifacts`` beside a SQLite database.

    MLflow would otherwise put them in ``./mlruns`` relative to the working directory, which differs
    between the Airflow worker processes. For other stores (a tracking server) the server decides.
    """
    database = _sqlite_database(tracking_uri)
    return None if database is None else (database.parent / "mlartifacts").as_uri()


def _sqlite_database(tracking_uri: str) -> Path | None:
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri.removeprefix("sqlite:///")).resolve()


def runs_filter(kind: str, pipeline: str) -> str:
    """The search filter of a pipeline's runs of one kind (``ipa.kind``, ``ipa.pipeline`` tags)."""
    # Spec names are [a-z0-9-], so the quoted value needs no escaping.
    return f"tags.`ipa.kind` = '{kind}' and tags.`ipa.pipeline` = '{pipeline}'"


def local_store(tracking_uri: str) -> Path | None:
    """The file of a SQLite store, or the folder of a file store; None for a server."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme == "sqlite":
        return Path(tracking_uri.removeprefix("sqlite:///"))
    if parsed.scheme in ("", "file"):
        return Path(parsed.path if parsed.scheme == "file" else tracking_uri)
    return None


def unreachable(tracking_uri: str, timeout_s: float) -> str:
    """Why an MLflow server does not answer within ``timeout_s`` ("" if it does). Ask this first where a
    caller must not hang: the MLflow client retries an unreachable server for minutes."""
    try:
        with urllib.request.urlopen(f"{tracking_uri.rstrip('/')}/health", timeout=timeout_s):
            return ""
    except urllib.error.HTTPError:
        return ""  # it answered (a proxy's 401 or 404 is an answer): the client says the rest
    except (OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"


def mlflow_client(tracking_uri: str) -> MlflowClient:
    from mlflow import MlflowClient

    database = _sqlite_database(tracking_uri)
    if database is not None:
        # SQLite creates the database file but not its folder.
        database.parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=tracking_uri)


def experiment_id_for(client: MlflowClient, name: str, tracking_uri: str) -> str:
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location_for(tracking_uri))
    except MlflowException:
        # Two rounds started at once (a manual trigger next to the weekly one): the other one created it.
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def _now_ms() -> int:
    return int(time.time() * 1000)


def start_profiling_round(tracking_uri: str, experiment: str, pipeline: str, params: dict) -> str:
    """Create the RUNNING parent run of one profiling round and return its run id."""
    from mlflow.entities import Param

    client = mlflow_client(tracking_uri)
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    run = client.create_run(
        experiment_id_for(client, experiment, tracking_uri),
        run_name=f"profile {pipeline} {started}",
        tags={"ipa.pipeline": pipeline, "ipa.kind": ROUND_KIND},
    )
    client.log_batch(run.info.run_id, params=[Param(key, str(value)) for key, value in params.items()])
    return run.info.run_id


def _step_metrics(rows: pd.DataFrame, timestamp: int) -> list[Metric]:
    from mlflow.entities import Metric

    return [
        Metric(f"{column}_c{int(row.cores)}", float(getattr(row, column)), timestamp, int(row.batch_size))
        for row in rows.itertuples(index=False)
        for column in STEP_METRIC_COLUMNS
    ]


def _fit_metrics(fits: pd.DataFrame, timestamp: int) -> list[Metric]:
    from mlflow.entities import Metric

    metrics = []
    for fit in fits.itertuples(index=False):
        suffix = f"{fit.quantile}_c{int(fit.cores)}"
        metrics.append(Metric(f"fit_r2_{suffix}", float(fit.r2), timestamp, 0))
        metrics.append(Metric(f"fit_max_rel_error_{suffix}", float(fit.max_relative_error), timestamp, 0))
    return metrics


def _joined(values: pd.Series) -> str:
    return ",".join(str(v) for v in sorted(set(values.astype(int))))


def _joined_text(values: pd.Series) -> str:
    return ",".join(sorted(set(values.astype(str))))


def variant_plot(rows: pd.DataFrame, title: str) -> Figure:
    """Latency p50 (dashed) and p99 (solid), and throughput, against batch size; one colour per core count."""
    from matplotlib.figure import Figure

    # A bare Figure renders with Agg on savefig and, unlike pyplot, leaves no global figure to close.
    figure = Figure(figsize=(10, 4), layout="constrained")
    latency_ax, throughput_ax = figure.subplots(1, 2)
    batch_sizes = sorted(set(rows["batch_size"].astype(int)))
    for index, (cores, group) in enumerate(rows.sort_values("batch_size").groupby("cores", sort=True)):
        batch, colour = group["batch_size"], f"C{index}"
        latency_ax.plot(batch, group["latency_p99_s"], "o-", color=colour, label=f"{cores} p99")
        latency_ax.plot(batch, group["latency_p50_s"], "o--", color=colour, label=f"{cores} p50")
        throughput_ax.plot(batch, group["throughput_rps"], "o-", color=colour, label=f"{cores}")
    for ax, ylabel in ((latency_ax, "latency of one batch (s)"), (throughput_ax, "throughput (requests/s)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(batch_sizes, [str(b) for b in batch_sizes])
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    latency_ax.legend(title="cores", fontsize="small")
    throughput_ax.legend(title="cores", fontsize="small")
    figure.suptitle(title)
    return figure


def _variant_rows(profile_rows: pd.DataFrame, pipeline: str, stage: str, variant: str) -> pd.DataFrame:
    missing = [c for c in _PROFILE_COLUMNS_USED if c not in profile_rows.columns]
    if missing:
        raise ValueError(f"the profile rows lack column(s) {', '.join(missing)}")
    selected = (
        (profile_rows["pipeline"] == pipeline)
        & (profile_rows["stage"] == stage)
        & (profile_rows["variant"] == variant)
    )
    rows = profile_rows[selected]
    if rows.empty:
        raise ValueError(f"the profile rows have no rows for {pipeline}/{stage}/{variant}")
    return rows.sort_values(["cores", "batch_size"]).reset_index(drop=True)


def _child_run(
    client: MlflowClient,
    parent_run_id: str,
    run_name: str,
    pipeline: str,
    stage: str,
    variant: str,
    tags: dict[str, str],
) -> str:
    """A RUNNING child of the round's parent run, tagged with the variant it is about; its run id."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    parent = client.get_run(parent_run_id)
    run = client.create_run(
        parent.info.experiment_id,
        run_name=run_name,
        tags={
            MLFLOW_PARENT_RUN_ID: parent_run_id,
            "ipa.pipeline": pipeline,
            "ipa.stage": stage,
            "ipa.variant": variant,
            "ipa.kind": VARIANT_KIND,
            **tags,
        },
    )
    return run.info.run_id


def log_variant_profile(
    tracking_uri: str,
    parent_run_id: str,
    pipeline: str,
    stage: str,
    variant: str,
    profile_rows: pd.DataFrame,
    fits: pd.DataFrame | None,
    accuracy: float | None,
) -> str:
    """Log one variant's profile as a FINISHED child run of the round; return the child's run id.

    ``profile_rows`` and ``fits`` (:func:`ipa_tasks.latency_model.fit_profile`) may cover more variants;
    only this variant's rows are logged.
    """
    from mlflow.entities import Metric, Param

    rows = _variant_rows(profile_rows, pipeline, stage, variant)
    # fit_profile returns a frame without columns when no group has two batch sizes.
    if fits is not None and not fits.empty:
        fits = fits[(fits["stage"] == stage) & (fits["variant"] == variant)]
    client = mlflow_client(tracking_uri)
    where = {f"ipa.{c}": _joined_text(rows[c]) for c in ("source", "host") if c in rows.columns}
    run_id = _child_run(client, parent_run_id, f"{stage}/{variant}", pipeline, stage, variant, where)
    try:
        timestamp = _now_ms()
        metrics = _step_metrics(rows, timestamp)
        if accuracy is not None and math.isfinite(accuracy):
            metrics.append(Metric("accuracy", float(accuracy), timestamp, 0))
        if fits is not None:
            metrics.extend(_fit_metrics(fits, timestamp))
        params = {
            "stage": stage,
            "variant": variant,
            "cores": _joined(rows["cores"]),
            "batch_sizes": _joined(rows["batch_size"]),
            "n_batch_sizes": str(rows["batch_size"].nunique()),
        }
        client.log_batch(run_id, metrics=metrics, params=[Param(k, v) for k, v in params.items()])
        client.log_text(run_id, rows.to_csv(index=False), "profile.csv")
        if fits is not None and not fits.empty:
            client.log_text(run_id, fits.to_csv(index=False), "fits.csv")
        figure = variant_plot(rows, f"{pipeline}: {stage}/{variant}")
        client.log_figure(run_id, figure, "latency_throughput.png")
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id


def log_quarantined_variant(
    tracking_uri: str,
    parent_run_id: str,
    pipeline: str,
    stage: str,
    variant: str,
    summary: str,
    report: dict,
    table: pd.DataFrame | None,
) -> str:
    """Log a variant whose table failed its checks as a FAILED child run: the GX report as
    ``gx_report.json``, the plain-English summary as ``check_summary.txt`` and the raw table as
    ``profile_quarantined.csv``; return the child's run id."""
    client = mlflow_client(tracking_uri)
    name = f"{stage}/{variant} (quarantined)"
    run_id = _child_run(client, parent_run_id, name, pipeline, stage, variant, {"ipa.outcome": "quarantined"})
    try:
        client.log_dict(run_id, report, "gx_report.json")
        client.log_text(run_id, summary + "\n", "check_summary.txt")
        if table is not None:
            client.log_text(run_id, table.to_csv(index=False), "profile_quarantined.csv")
    finally:
        client.set_terminated(run_id, "FAILED")
    return run_id


def accuracy_gap_plot(gap: pd.DataFrame, title: str) -> Figure:
    """Measured end-to-end accuracy against the product of stage accuracies, one labelled point each."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 6), layout="constrained")
    ax = figure.subplots()
    stages = [c for c in gap.columns if c not in _GAP_COLUMNS]
    ax.scatter(gap["product"], gap["measured"], zorder=3)
    for row in gap.itertuples(index=False):
        label = "+".join(str(getattr(row, s)) for s in stages)
        ax.annotate(label, (row.product, row.measured), fontsize=7, xytext=(3, 3), textcoords="offset points")
    low = min(gap["product"].min(), gap["measured"].min())
    high = max(gap["product"].max(), gap["measured"].max())
    # Points above the diagonal: stage errors overlap; below: an early error hurts more than independence.
    ax.plot([low, high], [low, high], "k--", linewidth=1, label="independent errors (measured = product)")
    ax.set_xlabel("product of stage accuracies")
    ax.set_ylabel("measured end-to-end accuracy")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return figure


def log_pipeline_accuracy(tracking_uri: str, parent_run_id: str, gap: pd.DataFrame) -> None:
    """Log the measured-vs-product table (``MeasuredAccuracyTable.correlation_gap``) to the round's run."""
    from mlflow.entities import Metric

    # Checked first: correlation_gap of an empty MeasuredAccuracyTable is a frame without columns.
    if gap.empty:
        raise ValueError("the accuracy gap table has no configurations")
    missing = [c for c in _GAP_COLUMNS if c not in gap.columns]
    if missing:
        raise ValueError(f"the accuracy gap table lacks column(s) {', '.join(missing)}")
    client = mlflow_client(tracking_uri)
    pipeline = client.get_run(parent_run_id).data.tags.get("ipa.pipeline", "")
    timestamp = _now_ms()
    summary = {
        "accuracy_gap_mean": float(gap["gap"].mean()),
        "accuracy_gap_mean_abs": float(gap["gap"].abs().mean()),
        "accuracy_gap_max_abs": float(gap["gap"].abs().max()),
        "n_configurations": float(len(gap)),
    }
    client.log_batch(parent_run_id, metrics=[Metric(k, v, timestamp, 0) for k, v in summary.items()])
    client.log_text(parent_run_id, gap.to_csv(index=False), f"{GAP_ARTIFACT_DIR}/measured_vs_product.csv")
    client.log_figure(
        parent_run_id,
        accuracy_gap_plot(gap, f"{pipeline}: measured vs product accuracy"),
        f"{GAP_ARTIFACT_DIR}/measured_vs_product.png",
    )


def log_round_table(tracking_uri: str, run_id: str, frame: pd.DataFrame, artifact_file: str) -> None:
    """Attach a table (the drift check, a summary) to a run as CSV."""
    mlflow_client(tracking_uri).log_text(run_id, frame.to_csv(index=False), artifact_file)


def finish_profiling_round(tracking_uri: str, parent_run_id: str, status: RunStatus, summary: dict) -> None:
    """End the round's run: numeric summary values become metrics, the others ``ipa.<key>`` tags."""
    from mlflow.entities import Metric, RunTag

    if status not in ("FINISHED", "FAILED"):
        raise ValueError(f"status must be FINISHED or FAILED, got {status!r}")
    timestamp = _now_ms()
    metrics, tags = [], []
    for key, value in summary.items():
        # bool is an int, but "quarantine enabled: 1.0" reads worse than a tag.
        if isinstance(value, int | float) and not isinstance(value, bool):
            metrics.append(Metric(key, float(value), timestamp, 0))
        elif isinstance(value, list | tuple | set):
            tags.append(RunTag(f"ipa.{key}", ",".join(str(v) for v in value)))
        else:
            tags.append(RunTag(f"ipa.{key}", str(value)))
    client = mlflow_client(tracking_uri)
    client.log_batch(parent_run_id, metrics=metrics, tags=tags)
    client.set_terminated(parent_run_id, status)


def profiling_rounds(tracking_uri: str, experiment: str, pipeline: str) -> pd.DataFrame:
    """The pipeline's rounds, newest first, in ``mlflow.search_runs``' layout.

    Columns: run_id, run_name, status, start_time, end_time (UTC), then ``params.*``, ``metrics.*`` and
    ``tags.*``; no rows if the experiment does not exist. ``mlflow.search_runs`` itself only reads the
    process-wide tracking URI, hence the client and the frame built here.
    """
    import pandas as pd

    client = mlflow_client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    runs = [] if found is None else _round_runs(client, found.experiment_id, pipeline)
    frame = pd.DataFrame.from_records([_run_record(run) for run in runs])
    if frame.empty:
        return pd.DataFrame(columns=list(_RUN_INFO_COLUMNS))
    for column in ("start_time", "end_time"):
        frame[column] = pd.to_datetime(frame[column], unit="ms", utc=True)
    return frame


def _round_runs(client: MlflowClient, experiment_id: str, pipeline: str) -> list[Run]:
    # Spec names are [a-z0-9-], so quoting the pipeline name needs no escaping.
    filter_string = f"tags.`ipa.kind` = '{ROUND_KIND}' and tags.`ipa.pipeline` = '{pipeline}'"
    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string, order_by=["attributes.start_time DESC"], page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _run_record(run: Run) -> dict[str, object]:
    return {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "status": run.info.status,
        "start_time": run.info.start_time,
        "end_time": run.info.end_time,
        **{f"params.{k}": v for k, v in run.data.params.items()},
        **{f"metrics.{k}": v for k, v in run.data.metrics.items()},
        **{f"tags.{k}": v for k, v in run.data.tags.items()},
    }
