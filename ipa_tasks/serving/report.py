"""The demo's closing report: how the served load fared, interval by adaptation interval.

What: the load generator's record of every request (``RequestRecord`` rows: send time, latency, outcome)
is bucketed by the adaptation loop's decision ticks (the decisions table of
``ipa_tasks.adaptation.decisions``): each decision's interval runs from its tick to the next tick, the
last one for ``interval_s``. Per interval the table gives the offered load, the decision's observed peak
and forecast, its plan, the p99 latency of the requests served, the SLA violations (late, dropped or
failed), and the plan's accuracy and cores. ``write_report`` writes that table as CSV and Markdown with a
summary and three plots (load vs forecast, accuracy and cost, latency CDF).

Why: the one-command demo ends by showing whether adapting every 30 s kept the SLA at what accuracy and
cost, as IPA's evaluation did (``reference/ipa.md``). This module is the pure part: frames in, a table,
figures and files out; it neither runs the load nor reads MLflow.

Times: a request's time is its ``sent_at`` (epoch seconds); one never sent (no free concurrency slot)
is placed at its ``scheduled_s`` from the replay's start, inferred from the sent ones. Requests with no
time at all (none of the replay was sent) are counted in the summary but in no interval. Requests
before the first tick form the row "before the first decision" (from the replay's start); any after the
last interval's end form the row "after the last interval" (up to the last of them). Matplotlib is
imported inside the plotting functions, and figures are bare ``Figure`` objects (no pyplot state), as
in ``ipa_tasks.tracking``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ipa_tasks.atomic_files import atomic_write, atomic_write_text

if TYPE_CHECKING:
    from matplotlib.figure import Figure

BEFORE = "before the first decision"
AFTER = "after the last interval"
REPORT_FILE = "report.md"
TABLE_FILE = "intervals.csv"
PLOT_FILES = ("load_forecast.png", "accuracy_cost.png", "latency_cdf.png")
TABLE_COLUMNS = (
    "interval",
    "start",
    "end",
    "duration_s",
    "requests",
    "offered_rps",
    "observed_peak_rps",
    "forecast_rps",
    "configuration",
    "served",
    "p99_latency_s",
    "late",
    "dropped",
    "errors",
    "sla_violations",
    "violation_share",
    "accuracy",
    "total_cores",
    "changed",
)
_REQUEST_COLUMNS = ("sent_at", "latency_s", "outcome")
_DECISION_COLUMNS = ("time", "observed_peak_rps", "forecast_rps", "configuration", "accuracy", "total_cores")


# --- times --------------------------------------------------------------------------------------------


def request_times(requests: pd.DataFrame) -> np.ndarray:
    """Each request's epoch second: ``sent_at``, or for one never sent the replay start + ``scheduled_s``
    (NaN when no request was sent, so the start is unknown)."""
    missing = [c for c in _REQUEST_COLUMNS if c not in requests.columns]
    if missing:
        raise ValueError(f"the request records lack column(s) {', '.join(missing)}")
    sent_at = pd.to_numeric(requests["sent_at"], errors="coerce").to_numpy(dtype=float)
    start = replay_start(requests)
    if math.isnan(start) or "scheduled_s" not in requests.columns:
        return sent_at
    scheduled = pd.to_numeric(requests["scheduled_s"], errors="coerce").to_numpy(dtype=float)
    return np.where(np.isfinite(sent_at), sent_at, start + scheduled)


def replay_start(requests: pd.DataFrame) -> float:
    """The epoch second the replay started (``sent_at - sent_s`` of the sent requests), NaN if unknown."""
    if not {"sent_at", "sent_s"} <= set(requests.columns):
        return math.nan
    sent_at = pd.to_numeric(requests["sent_at"], errors="coerce").to_numpy(dtype=float)
    origins = sent_at - pd.to_numeric(requests["sent_s"], errors="coerce").to_numpy(dtype=float)
    origins = origins[np.isfinite(origins)]
    return float(np.median(origins)) if origins.size else math.nan


def _epoch_seconds(times: pd.Series) -> np.ndarray:
    stamps = pd.to_datetime(times, utc=True)
    return ((stamps - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)).to_numpy(dtype=float)


def _stamp(epoch_s: float) -> pd.Timestamp:
    return pd.Timestamp(epoch_s, unit="s", tz="UTC")


# --- the interval table -------------------------------------------------------------------------------


def interval_table(
    requests: pd.DataFrame, decisions: pd.DataFrame, *, sla_s: float, interval_s: float = 30
) -> pd.DataFrame:
    """One row per adaptation interval (see the module docstring), in time order; ``TABLE_COLUMNS``."""
    missing = [c for c in _DECISION_COLUMNS if c not in decisions.columns]
    if missing:
        raise ValueError(f"the decisions table lacks column(s) {', '.join(missing)}")
    if interval_s <= 0:
        raise ValueError(f"interval_s must be positive, got {interval_s}")
    ordered = decisions.assign(_t=_epoch_seconds(decisions["time"])).sort_values("_t", kind="stable")
    ticks = ordered["_t"].to_numpy(dtype=float)
    times = request_times(requests)
    placed = np.isfinite(times)
    edges = np.append(ticks, ticks[-1] + interval_s) if ticks.size else ticks
    # -1: before the first tick; len(ticks): at or after the last interval's end.
    slot = np.searchsorted(edges, times, side="right") - 1 if edges.size else np.full(len(times), -1)
    rows = []
    if (placed & (slot == -1)).any():
        # From the replay's start, so that the offered load counts the seconds before the first request.
        first = float(np.nanmin([times[placed & (slot == -1)].min(), replay_start(requests)]))
        end = ticks[0] if ticks.size else float(times[placed].max())
        rows.append(_row(BEFORE, first, end, requests[placed & (slot == -1)], None, sla_s))
    for position, decision in enumerate(ordered.to_dict("records")):
        chosen = placed & (slot == position)
        rows.append(
            _row(str(position + 1), edges[position], edges[position + 1], requests[chosen], decision, sla_s)
        )
    late_rows = placed & (slot == len(ticks)) if ticks.size else np.zeros(len(times), dtype=bool)
    if late_rows.any():
        rows.append(_row(AFTER, edges[-1], float(times[late_rows].max()), requests[late_rows], None, sla_s))
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def _row(
    label: str,
    start: float,
    end: float,
    requests: pd.DataFrame,
    decision: Mapping[str, Any] | None,
    sla_s: float,
) -> dict[str, Any]:
    counts = _outcomes(requests, sla_s)
    duration = float(end - start)
    plan = decision or {}
    return {
        "interval": label,
        "start": _stamp(start),
        "end": _stamp(end),
        "duration_s": duration,
        "requests": len(requests),
        "offered_rps": len(requests) / duration if duration > 0 else math.nan,
        "observed_peak_rps": float(plan.get("observed_peak_rps", math.nan)),
        "forecast_rps": float(plan.get("forecast_rps", math.nan)),
        "configuration": _configuration(plan),
        **counts,
        "violation_share": counts["sla_violations"] / len(requests) if len(requests) else math.nan,
        "accuracy": float(plan.get("accuracy", math.nan)),
        "total_cores": float(plan.get("total_cores", math.nan)),
        "changed": int(plan.get("changed", 0) or 0),
    }


def _configuration(decision: Mapping[str, Any]) -> str:
    """The decision's plan; for a tick that made none (no load known yet), what it kept running."""
    planned, running = (decision.get(k, "") for k in ("configuration", "running"))
    if isinstance(planned, str) and planned:
        return planned
    return f"kept: {running}" if isinstance(running, str) and running else ""


def _served_latencies(requests: pd.DataFrame) -> np.ndarray:
    latency = pd.to_numeric(requests["latency_s"], errors="coerce")
    return latency[(requests["outcome"] == "ok") & latency.notna()].to_numpy(dtype=float)


def _outcomes(requests: pd.DataFrame, sla_s: float) -> dict[str, Any]:
    """Served, p99 of the served, late (served after ``sla_s``), dropped, errors, and their sum of
    violations -- counted as ``load_generator.summarize`` counts them."""
    served = _served_latencies(requests)
    late = int((served > sla_s).sum())
    dropped = int((requests["outcome"] == "dropped").sum())
    errors = int((requests["outcome"] == "error").sum())
    return {
        "served": int(served.size),
        "p99_latency_s": float(np.percentile(served, 99)) if served.size else math.nan,
        "late": late,
        "dropped": dropped,
        "errors": errors,
        "sla_violations": late + dropped + errors,
    }


# --- the summary --------------------------------------------------------------------------------------


def report_summary(table: pd.DataFrame, requests: pd.DataFrame, *, sla_s: float) -> dict[str, Any]:
    """The whole run in numbers. Accuracy is averaged over time and cores summed over time (core-seconds),
    both over the decisions' intervals (the plan in force); latencies are over the served requests."""
    counts = _outcomes(requests, sla_s)
    served = _served_latencies(requests)
    planned = _decision_rows(table)
    weighted = planned[planned["accuracy"].notna() & (planned["duration_s"] > 0)]
    weight = float(weighted["duration_s"].sum())
    accuracy = float((weighted["accuracy"] * weighted["duration_s"]).sum() / weight) if weight else math.nan
    costed = planned[planned["total_cores"].notna()]
    return {
        "requests": len(requests),
        "served": counts["served"],
        "dropped": counts["dropped"],
        "errors": counts["errors"],
        "late": counts["late"],
        "p50_latency_s": float(np.percentile(served, 50)) if served.size else math.nan,
        "p99_latency_s": counts["p99_latency_s"],
        "sla_s": float(sla_s),
        "sla_violations": counts["sla_violations"],
        "violation_share": counts["sla_violations"] / len(requests) if len(requests) else math.nan,
        "mean_accuracy": accuracy,
        "core_seconds": float((costed["total_cores"] * costed["duration_s"]).sum()),
        "decisions": len(planned),
        "plan_changes": int(planned["changed"].sum()),
        "unplaced_requests": len(requests) - int(table["requests"].sum()),
    }


def summary_text(summary: Mapping[str, Any]) -> str:
    """The summary in a few lines, for the console."""
    lines = [
        f"{summary['requests']} requests: {summary['served']} served, {summary['dropped']} dropped, "
        f"{summary['errors']} errors",
        f"latency of the served: p50 {_num(summary['p50_latency_s'], '.3f')} s, "
        f"p99 {_num(summary['p99_latency_s'], '.3f')} s",
        f"SLA {summary['sla_s']:g} s: {summary['sla_violations']} violations "
        f"({_share(summary['violation_share'])}; {summary['late']} late, {summary['dropped']} dropped, "
        f"{summary['errors']} errors)",
        f"{_count(summary['decisions'], 'decision')}, {_count(summary['plan_changes'], 'plan change')}; "
        "mean accuracy "
        f"{_num(summary['mean_accuracy'], '.4f')}, {_num(summary['core_seconds'], '.0f')} core-seconds",
    ]
    if summary["unplaced_requests"]:
        lines.append(f"{summary['unplaced_requests']} requests have no send time and are in no interval")
    return "\n".join(lines)


def _num(value: float, spec: str) -> str:
    return "-" if value is None or math.isnan(value) else format(value, spec)


def _share(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.1%}"


# --- the plots ----------------------------------------------------------------------------------------


def report_plots(table: pd.DataFrame, requests: pd.DataFrame, *, sla_s: float) -> dict[str, Figure]:
    """The report's figures by file name (``PLOT_FILES``)."""
    return dict(
        zip(
            PLOT_FILES,
            (
                load_forecast_plot(table, requests),
                accuracy_cost_plot(table),
                latency_cdf_plot(requests, sla_s),
            ),
            strict=True,
        )
    )


def _decision_rows(table: pd.DataFrame) -> pd.DataFrame:
    return table[~table["interval"].isin([BEFORE, AFTER])]


def load_forecast_plot(table: pd.DataFrame, requests: pd.DataFrame) -> Figure:
    """Requests sent per second, and each decision's observed peak and forecast at its tick."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4), layout="constrained")
    ax = figure.subplots()
    times = request_times(requests)
    times = times[np.isfinite(times)]
    if times.size:
        first = math.floor(times.min())
        per_second = np.bincount((np.floor(times) - first).astype(int))
        seconds = pd.to_datetime(first + np.arange(per_second.size), unit="s", utc=True)
        ax.step(
            seconds, per_second, where="post", color="C7", label="offered load (requests sent per second)"
        )
    decided = _decision_rows(table)
    ax.plot(
        decided["start"], decided["observed_peak_rps"], "o-", color="C0", label="observed peak (decision)"
    )
    ax.plot(decided["start"], decided["forecast_rps"], "s--", color="C1", label="forecast peak (decision)")
    ax.set_xlabel("time (UTC)")
    ax.set_ylabel("requests/s")
    ax.legend(fontsize="small")
    ax.grid(True, alpha=0.3)
    figure.suptitle("Offered load, observed peak and forecast")
    return figure


def accuracy_cost_plot(table: pd.DataFrame) -> Figure:
    """The plan's cores and accuracy over time, as steps, with the ticks that changed the plan marked."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4), layout="constrained")
    cost_ax = figure.subplots()
    decided = _decision_rows(table)
    cost_ax.step(*_held(decided, "total_cores"), where="post", color="C2", label="cores")
    changed = decided[decided["changed"] == 1]
    cost_ax.scatter(changed["start"], changed["total_cores"], color="k", zorder=3, label="plan changed")
    cost_ax.set_xlabel("time (UTC)")
    cost_ax.set_ylabel("cores of the plan")
    cost_ax.grid(True, alpha=0.3)
    accuracy_ax = cost_ax.twinx()
    accuracy_ax.step(*_held(decided, "accuracy"), where="post", color="C3", label="accuracy")
    accuracy_ax.set_ylabel("pipeline accuracy of the plan")
    cost_ax.legend(loc="upper left", fontsize="small")
    accuracy_ax.legend(loc="upper right", fontsize="small")
    figure.suptitle("Accuracy and cost of the plan")
    return figure


def _held(decided: pd.DataFrame, column: str) -> tuple[list[Any], list[float]]:
    """Step data of ``column`` in force from each tick, the last value drawn to its interval's end."""
    if decided.empty:
        return [], []
    times = [*decided["start"], decided["end"].iloc[-1]]
    return times, [*decided[column], decided[column].iloc[-1]]


def latency_cdf_plot(requests: pd.DataFrame, sla_s: float) -> Figure:
    """The CDF of the served requests' latency, the SLA a vertical line, the share dropped in the legend."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), layout="constrained")
    ax = figure.subplots()
    served = np.sort(_served_latencies(requests))
    total = len(requests)
    if served.size:
        ax.step(served, np.arange(1, served.size + 1) / served.size, where="post", label="served requests")
    ax.axvline(sla_s, color="C3", linestyle="--", label=f"SLA {sla_s:g} s")
    dropped = int((requests["outcome"] == "dropped").sum())
    errors = int((requests["outcome"] == "error").sum())
    ax.plot(
        [], [], " ", label=f"dropped {dropped} of {total} ({_share(dropped / total if total else math.nan)})"
    )
    if errors:
        ax.plot([], [], " ", label=f"errors {errors} of {total} ({_share(errors / total)})")
    ax.set_xlabel("latency (s)")
    ax.set_ylabel("share of served requests")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize="small", loc="lower right")
    ax.grid(True, alpha=0.3)
    figure.suptitle("Latency of the served requests")
    return figure


# --- the files ----------------------------------------------------------------------------------------


def markdown_table(table: pd.DataFrame) -> str:
    """The interval table in Markdown, numbers rounded for reading (the CSV keeps them whole)."""
    header = (
        "interval",
        "start (UTC)",
        "requests/s",
        "observed peak",
        "forecast",
        "p99 s",
        "SLA violations",
        "accuracy",
        "cores",
        "changed",
        "plan",
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table.to_dict("records"):
        cells = (
            row["interval"],
            row["start"].strftime("%Y-%m-%d %H:%M:%S"),
            _num(row["offered_rps"], ".2f"),
            _num(row["observed_peak_rps"], ".2f"),
            _num(row["forecast_rps"], ".2f"),
            _num(row["p99_latency_s"], ".3f"),
            f"{row['sla_violations']} ({_share(row['violation_share'])})",
            _num(row["accuracy"], ".4f"),
            _num(row["total_cores"], "g"),
            "yes" if row["changed"] else "",
            row["configuration"] or "-",
        )
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def report_markdown(table: pd.DataFrame, summary: Mapping[str, Any]) -> str:
    plots = "\n".join(f"![{name}]({name})" for name in PLOT_FILES)
    return (
        "# Serving under adaptation\n\n"
        "## Summary\n\n"
        + "\n".join(f"- {line}" for line in summary_text(summary).splitlines())
        + "\n\nAn SLA violation is a request served later than the SLA, dropped, or failed; p99 is over the "
        "served requests. Mean accuracy is averaged over time; core-seconds are the plan's cores times the "
        "time it was in force.\n\n"
        f"## Intervals\n\n{markdown_table(table)}\n\n(every number also in [{TABLE_FILE}]({TABLE_FILE}))\n\n"
        f"## Plots\n\n{plots}\n"
    )


@dataclass(frozen=True)
class WrittenReport:
    path: Path
    """``report.md``"""
    table: pd.DataFrame
    summary: dict[str, Any]


def write_report(
    folder: Path, requests: pd.DataFrame, decisions: pd.DataFrame, *, sla_s: float, interval_s: float = 30
) -> WrittenReport:
    """Write ``report.md``, ``intervals.csv`` and the plots into ``folder``; the report's path, the
    interval table and the summary it shows."""
    table = interval_table(requests, decisions, sla_s=sla_s, interval_s=interval_s)
    summary = report_summary(table, requests, sla_s=sla_s)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / TABLE_FILE, lambda tmp: table.to_csv(tmp, index=False))
    for name, figure in report_plots(table, requests, sla_s=sla_s).items():
        atomic_write(folder / name, lambda tmp, figure=figure: figure.savefig(tmp, format="png", dpi=100))
    path = folder / REPORT_FILE
    atomic_write_text(path, report_markdown(table, summary))
    return WrittenReport(path, table, summary)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
