"""The demo's report: requests bucketed by decision ticks (before the first, at a boundary, never sent,
after the last interval), p99 and SLA violations per interval, the summary, the plots and the files."""

from __future__ import annotations

import math
from dataclasses import asdict
from io import BytesIO
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ipa_tasks.serving.load_generator import RequestRecord, write_records
from ipa_tasks.serving.report import (
    AFTER,
    BEFORE,
    PLOT_FILES,
    REPORT_FILE,
    TABLE_COLUMNS,
    TABLE_FILE,
    interval_table,
    report_plots,
    report_summary,
    summary_text,
    write_report,
)

T0 = pd.Timestamp("2025-01-01T00:00:00+00:00").timestamp()
ORIGIN = T0 - 10  # the replay started 10 s before the first decision
SLA = 0.5


def _record(
    index: int, at: float | None, latency: float | None, outcome: str, scheduled: float
) -> RequestRecord:
    return RequestRecord(
        index=index,
        second=int(scheduled),
        scheduled_s=scheduled,
        sent_s=None if at is None else at - ORIGIN,
        sent_at=at,
        latency_s=latency,
        outcome=outcome,
        reason="queue full" if outcome == "dropped" else ("boom" if outcome == "error" else ""),
        http_status=200 if outcome != "error" else None,
        router_latency_s=latency,
        variants="{}",
        batch_sizes="{}",
    )


def _records() -> list[RequestRecord]:
    rows = [
        (T0 - 5, 0.1, "ok"),  # before the first decision
        (T0 + 1, 0.1, "ok"),  # interval 1: 5 served (one late), one dropped
        (T0 + 2, 0.2, "ok"),
        (T0 + 3, 0.3, "ok"),
        (T0 + 4, 0.4, "ok"),
        (T0 + 5, 0.9, "ok"),
        (T0 + 10, None, "dropped"),
        (T0 + 30, 0.05, "error"),  # exactly at the second tick: interval 2
        (None, None, "error"),  # never sent; scheduled at T0 + 35: interval 2
        (T0 + 40, 0.2, "ok"),
        (T0 + 59.5, 0.2, "ok"),
        (T0 + 95, 0.3, "ok"),  # after the last interval (T0 + 90)
    ]
    return [
        _record(i, at, latency, outcome, (T0 + 35 if at is None else at) - ORIGIN)
        for i, (at, latency, outcome) in enumerate(rows)
    ]


def _requests() -> pd.DataFrame:
    return pd.DataFrame([asdict(r) for r in _records()])


def _decisions() -> pd.DataFrame:
    times = [pd.Timestamp(T0 + s, unit="s", tz="UTC").isoformat() for s in (0, 30, 60)]
    table = pd.DataFrame(
        {
            "time": times,
            "observed_peak_rps": [5.0, 6.0, 7.0],
            "forecast_rps": [5.5, 6.5, 7.5],
            "configuration": ["a=small/b1/c4/x1", "a=big/b2/c8/x1", "a=big/b2/c8/x1"],
            "accuracy": [0.8, 0.9, 0.9],
            "total_cores": [4.0, 8.0, 8.0],
            "latency_s": [0.3, 0.4, 0.4],
            "sla_s": [SLA] * 3,
            "apply_status": ["applied", "applied", "nothing to do"],
            "changed": [0, 1, 0],
            "steps": [0, 2, 0],
        }
    )
    return table.iloc[[2, 0, 1]].reset_index(drop=True)  # out of order: the table sorts by time


def test_interval_table_buckets_requests_by_decision_ticks() -> None:
    table = interval_table(_requests(), _decisions(), sla_s=SLA)

    assert list(table.columns) == list(TABLE_COLUMNS)
    assert table["interval"].tolist() == [BEFORE, "1", "2", "3", AFTER]
    assert table["requests"].tolist() == [1, 6, 4, 0, 1]
    assert table["served"].tolist() == [1, 5, 2, 0, 1]
    assert table["late"].tolist() == [0, 1, 0, 0, 0]
    assert table["dropped"].tolist() == [0, 1, 0, 0, 0]
    assert table["errors"].tolist() == [0, 0, 2, 0, 0]
    assert table["sla_violations"].tolist() == [0, 2, 2, 0, 0]
    assert table.loc[1, "violation_share"] == pytest.approx(2 / 6)
    assert table.loc[2, "violation_share"] == pytest.approx(2 / 4)
    assert math.isnan(table.loc[3, "violation_share"])
    # p99 of 0.1..0.4 and 0.9, linear as np.percentile: 0.4 + 0.96 * 0.5
    assert table.loc[1, "p99_latency_s"] == pytest.approx(0.88)
    assert table.loc[2, "p99_latency_s"] == pytest.approx(0.2)
    assert math.isnan(table.loc[3, "p99_latency_s"])
    assert table.loc[1:3, "offered_rps"].tolist() == pytest.approx([6 / 30, 4 / 30, 0.0])
    assert table.loc[1:3, "duration_s"].tolist() == [30.0, 30.0, 30.0]


def test_interval_table_carries_each_decisions_plan() -> None:
    table = interval_table(_requests(), _decisions(), sla_s=SLA).set_index("interval")

    assert table.loc["1", "start"] == pd.Timestamp("2025-01-01T00:00:00Z")
    assert table.loc["3", "end"] == pd.Timestamp("2025-01-01T00:01:30Z")
    assert table.loc[["1", "2", "3"], "observed_peak_rps"].tolist() == [5.0, 6.0, 7.0]
    assert table.loc[["1", "2", "3"], "forecast_rps"].tolist() == [5.5, 6.5, 7.5]
    assert table.loc["2", "configuration"] == "a=big/b2/c8/x1"
    assert table.loc[["1", "2", "3"], "accuracy"].tolist() == [0.8, 0.9, 0.9]
    assert table.loc[["1", "2", "3"], "total_cores"].tolist() == [4.0, 8.0, 8.0]
    assert table["changed"].tolist() == [0, 0, 1, 0, 0]
    # The rows without a decision have no plan.
    assert table.loc[BEFORE, "configuration"] == ""
    assert math.isnan(table.loc[BEFORE, "accuracy"])
    # From the replay's start (10 s before the first tick), not from its first request (5 s before).
    assert table.loc[BEFORE, "start"] == pd.Timestamp(ORIGIN, unit="s", tz="UTC")
    assert table.loc[BEFORE, "offered_rps"] == pytest.approx(1 / 10)
    assert table.loc[BEFORE, "end"] == pd.Timestamp("2025-01-01T00:00:00Z")


def test_interval_table_reads_records_written_to_csv(tmp_path: Path) -> None:
    path = tmp_path / "requests.csv"
    write_records(_records(), path)

    from_csv = interval_table(pd.read_csv(path), _decisions(), sla_s=SLA)
    in_memory = interval_table(_requests(), _decisions(), sla_s=SLA)

    pd.testing.assert_frame_equal(from_csv, in_memory)


def test_interval_table_without_decisions_is_all_before() -> None:
    table = interval_table(_requests(), _decisions().iloc[:0], sla_s=SLA)

    assert table["interval"].tolist() == [BEFORE]
    assert table.loc[0, "requests"] == 12
    assert table.loc[0, "sla_violations"] == 4


def test_interval_table_refuses_a_decisions_table_without_its_columns() -> None:
    with pytest.raises(ValueError, match="forecast_rps"):
        interval_table(_requests(), _decisions().drop(columns="forecast_rps"), sla_s=SLA)


def test_summary_counts_the_whole_run() -> None:
    requests = _requests()
    table = interval_table(requests, _decisions(), sla_s=SLA)

    summary = report_summary(table, requests, sla_s=SLA)

    served = [0.1, 0.1, 0.2, 0.3, 0.4, 0.9, 0.2, 0.2, 0.3]
    assert summary["requests"] == 12
    assert (summary["served"], summary["dropped"], summary["errors"], summary["late"]) == (9, 1, 2, 1)
    assert summary["sla_violations"] == 4
    assert summary["violation_share"] == pytest.approx(4 / 12)
    assert summary["p50_latency_s"] == pytest.approx(np.percentile(served, 50))
    assert summary["p99_latency_s"] == pytest.approx(np.percentile(served, 99))
    assert summary["mean_accuracy"] == pytest.approx((0.8 + 0.9 + 0.9) / 3)
    assert summary["core_seconds"] == pytest.approx(4 * 30 + 8 * 30 + 8 * 30)
    assert (summary["decisions"], summary["plan_changes"], summary["unplaced_requests"]) == (3, 1, 0)
    text = summary_text(summary)
    assert "12 requests: 9 served, 1 dropped, 2 errors" in text
    assert "4 violations (33.3%" in text
    assert "600 core-seconds" in text


def _labels(figure_axes: object) -> list[str]:
    return [line.get_label() for line in figure_axes.get_lines()]  # type: ignore[attr-defined]


def test_plots_have_their_lines_and_save_as_png() -> None:
    requests = _requests()
    table = interval_table(requests, _decisions(), sla_s=SLA)

    figures = report_plots(table, requests, sla_s=SLA)

    assert list(figures) == list(PLOT_FILES)
    load_ax = figures["load_forecast.png"].axes[0]
    assert _labels(load_ax) == [
        "offered load (requests sent per second)",
        "observed peak (decision)",
        "forecast peak (decision)",
    ]
    offered = load_ax.get_lines()[0].get_ydata()
    assert offered.sum() == 12 and offered.max() == 1  # every request, each in its own second
    assert list(load_ax.get_lines()[1].get_ydata()) == [5.0, 6.0, 7.0]
    cost_ax, accuracy_ax = figures["accuracy_cost.png"].axes
    assert _labels(cost_ax) == ["cores"]
    assert _labels(accuracy_ax) == ["accuracy"]
    # Each plan held to the end of its interval, the last one included.
    assert list(cost_ax.get_lines()[0].get_ydata()) == [4.0, 8.0, 8.0, 8.0]
    assert list(accuracy_ax.get_lines()[0].get_ydata()) == [0.8, 0.9, 0.9, 0.9]
    assert cost_ax.collections[0].get_label() == "plan changed"
    assert len(cost_ax.collections[0].get_offsets()) == 1
    cdf_ax = figures["latency_cdf.png"].axes[0]
    lines = {line.get_label(): line for line in cdf_ax.get_lines()}
    assert list(lines["SLA 0.5 s"].get_xdata()) == [SLA, SLA]
    assert list(lines["served requests"].get_ydata())[-1] == pytest.approx(1.0)
    legend = [text.get_text() for text in cdf_ax.get_legend().get_texts()]
    assert "dropped 1 of 12 (8.3%)" in legend
    assert "errors 2 of 12 (16.7%)" in legend
    for figure in figures.values():
        buffer = BytesIO()
        figure.savefig(buffer, format="png")
        assert buffer.getvalue().startswith(b"\x89PNG")


def test_write_report_writes_the_markdown_csv_and_plots(tmp_path: Path) -> None:
    folder = tmp_path / "report"

    written = write_report(folder, _requests(), _decisions(), sla_s=SLA)
    path = written.path

    assert path == folder / REPORT_FILE
    assert len(written.table) == 5 and written.summary["requests"] == 12
    for name in (REPORT_FILE, TABLE_FILE, *PLOT_FILES):
        assert (folder / name).stat().st_size > 0, name
    for name in PLOT_FILES:
        assert (folder / name).read_bytes().startswith(b"\x89PNG")
    assert len(pd.read_csv(folder / TABLE_FILE)) == 5
    text = path.read_text(encoding="utf-8")
    assert "| interval | start (UTC) | requests/s |" in text
    first = "| 1 | 2025-01-01 00:00:00 | 0.20 | 5.00 | 5.50 | 0.880 | 2 (33.3%) | 0.8000 | 4 |  | "
    first += "a=small/b1/c4/x1 |"
    assert first in text
    assert f"| {BEFORE} |" in text and f"| {AFTER} |" in text
    assert "12 requests: 9 served, 1 dropped, 2 errors" in text
    assert "![latency_cdf.png](latency_cdf.png)" in text


def test_a_decision_without_a_plan_shows_what_it_kept_running() -> None:
    decisions = _decisions().sort_values("time").reset_index(drop=True)
    decisions["running"] = ["a=small/b1/c4/x1", "a=small/b1/c4/x1", "a=big/b2/c8/x1"]
    decisions.loc[0, "configuration"] = ""
    table = interval_table(_requests(), decisions, sla_s=SLA).set_index("interval")
    assert table.loc["1", "configuration"] == "kept: a=small/b1/c4/x1"
    assert table.loc["2", "configuration"] == "a=big/b2/c8/x1"
