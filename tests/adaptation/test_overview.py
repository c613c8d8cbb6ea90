"""The page model of a pipeline's Airflow UI page, from day tables written by the loop's own record
functions: what runs and since when, the last decisions, the series over a day boundary, the MLflow links
(http, override, SQLite, unreachable), the empty and unknown cases, and the HTML's escaping."""

from __future__ import annotations

import re
import socket
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from ipa_tasks.adaptation.decisions import append_decision, decision_row, log_to_mlflow
from ipa_tasks.adaptation.overview import (
    UnknownPipelineError,
    known_pipelines,
    mlflow_links,
    mlflow_ui_base,
    parse_configuration,
    pipeline_listing,
    pipeline_overview,
    run_url,
    shipped_pipelines,
)
from ipa_tasks.adaptation.overview_page import index_page, pipeline_page, series_plot_png
from ipa_tasks.spec import load_spec, shipped_spec_paths
from ipa_tasks.tracking import PROFILING_EXPERIMENT, start_profiling_round

PIPELINE = "digit-strips"
SMALL = {"detect": ("d-small", 1, 1), "classify": ("c", 8, 1)}
LARGE = {"detect": ("d-large", 2, 3), "classify": ("c", 8, 1)}
START = datetime(2026, 12, 1, 23, 58, 0, tzinfo=UTC)


def stages(config: dict[str, tuple[str, int, int]]) -> list[dict]:
    return [
        {"stage": stage, "variant": variant, "batch_size": batch, "cores": 1, "replicas": replicas}
        for stage, (variant, batch, replicas) in config.items()
    ]


def tick(load: float, status: str, plan: dict, running: dict | None, **extra) -> dict:
    """A tick as ``ipa_adapt`` passes it to the record step: planned ``plan``, ``running`` when it decided."""
    return {
        "pipeline": PIPELINE,
        "observation": {"rates": [load - 3, load], "source": "local", "missing": 0, "fallback": False},
        "forecast": {"rps": load * 1.1, "forecaster": "window-max", "horizon_s": 40},
        "plan": {
            "policy": "ipa",
            "solver": "highs",
            "status": "optimal",
            "degraded": False,
            "reason": "",
            "sla_s": 0.5,
            "latency_s": 0.2,
            "total_cores": sum(s["replicas"] for s in stages(plan)),
            "terms": {"objective": 1.0, "accuracy": 0.9 if plan is LARGE else 0.8},
            "stages": stages(plan),
        },
        "running": None
        if running is None
        else {s["stage"]: {k: v for k, v in s.items() if k != "stage"} for s in stages(running)},
        "steps": [{"kind": "switch"}] if plan is not running else [],
        "apply": {"status": status, "duration_s": 0.1, "message": f"{status} message"},
        **extra,
    }


def record(home: Path, ticks: list[dict], start: datetime = START, every_s: int = 30) -> list[dict]:
    rows = []
    for i, t in enumerate(ticks):
        row = decision_row(t, f"run-{i}", start + timedelta(seconds=every_s * i))
        append_decision(home, PIPELINE, row)
        rows.append(row)
    return rows


def overview(home: Path, uri: str = "", **options):
    return pipeline_overview(
        home, uri or f"sqlite:///{home / 'none.db'}", PIPELINE, today=date(2026, 12, 2), **options
    )


# --- what runs ----------------------------------------------------------------------------------------------


def test_what_runs_is_the_plan_of_the_latest_applied_tick_since_that_tick(tmp_path: Path):
    record(
        tmp_path,
        [
            tick(10, "unchanged", SMALL, SMALL),
            tick(40, "applied", LARGE, SMALL),  # 23:58:30: switched to LARGE
            tick(41, "unchanged", LARGE, LARGE),
            # Planned SMALL again, but the apply failed and was rolled back: LARGE still runs.
            tick(12, "rolled_back", SMALL, LARGE, error="apply: rolled back after 'switch' failed"),
        ],
    )
    running = overview(tmp_path).running
    assert running is not None
    assert running.configuration == "detect=d-large/b2/c1/x3; classify=c/b8/c1/x1"
    assert running.stages[0].variant == "d-large" and running.stages[0].replicas == 3
    assert (running.since, running.since_applied) == ("2026-12-01T23:58:30+00:00", True)
    assert running.as_of == "2026-12-01T23:59:30+00:00" and running.note == ""


def test_without_an_applied_tick_it_is_what_ran_since_the_first_tick_that_saw_it(tmp_path: Path):
    record(tmp_path, [tick(10, "unchanged", SMALL, SMALL), tick(11, "dry_run", LARGE, SMALL, dry_run=True)])
    running = overview(tmp_path).running
    assert running.configuration == "detect=d-small/b1/c1/x1; classify=c/b8/c1/x1"
    assert (running.since, running.since_applied) == ("2026-12-01T23:58:00+00:00", False)


def test_a_latest_tick_that_cannot_tell_what_runs_leaves_the_last_known_with_a_note(tmp_path: Path):
    record(
        tmp_path,
        [
            tick(40, "applied", LARGE, SMALL),
            tick(60, "inconsistent", SMALL, LARGE, error="apply: the read-back disagrees: it runs ..."),
        ],
    )
    running = overview(tmp_path).running
    assert running.configuration.startswith("detect=d-large")
    assert running.as_of == "2026-12-01T23:58:00+00:00"
    assert "could not tell what runs: apply: the read-back disagrees" in running.note


def test_no_tick_that_knew_what_runs_gives_none(tmp_path: Path):
    # The local runtime was down: the tick could not read what runs, so it has no running and no plan applied.
    record(tmp_path, [tick(10, "not run", SMALL, None, error="decide: the local runtime is not running")])
    assert overview(tmp_path).running is None


def test_the_notation_parses_back_into_stages_and_skips_what_is_not_in_it():
    assert parse_configuration("a=v/x/b2/c1/x3; broken; b=w/b1/c2/x1")[0].variant == "v/x"
    assert [s.stage for s in parse_configuration("a=v/x/b2/c1/x3; broken; b=w/b1/c2/x1")] == ["a", "b"]
    assert parse_configuration("") == ()


# --- decisions and series ----------------------------------------------------------------------------------


def test_decisions_are_newest_first_and_limited(tmp_path: Path):
    record(tmp_path, [tick(10 + i, "unchanged", SMALL, SMALL) for i in range(6)])
    decisions = overview(tmp_path, limit=4).decisions
    assert [d.time[11:19] for d in decisions] == ["00:00:30", "00:00:00", "23:59:30", "23:59:00"]
    assert decisions[0].observed_peak_rps == 15 and decisions[0].message == "unchanged message"


def test_the_series_run_across_the_day_boundary_in_time_order(tmp_path: Path):
    # 23:58:00 ... 00:01:30: four ticks on each UTC day, so two day tables.
    record(tmp_path, [tick(10 + i, "applied" if i == 5 else "unchanged", SMALL, SMALL) for i in range(8)])
    # A tick three days before is outside the two days read.
    record(tmp_path, [tick(99, "unchanged", SMALL, SMALL)], start=START - timedelta(days=3))
    result = overview(tmp_path)
    assert result.days == ("2026-12-01", "2026-12-02") and result.ticks == 8
    assert list(result.series.time) == sorted(result.series.time)
    assert result.series.time[3:5] == ("2026-12-01T23:59:30+00:00", "2026-12-02T00:00:00+00:00")
    assert result.series.observed_peak_rps == tuple(float(10 + i) for i in range(8))
    assert result.series.forecast_rps[0] == pytest.approx(11.0)
    assert result.series.changed == tuple(i == 5 for i in range(8))
    assert set(result.series.total_cores) == {2.0}
    assert overview(tmp_path, days=5).ticks == 9


def test_a_tick_without_load_or_plan_has_gaps_in_the_series_and_null_in_json(tmp_path: Path):
    record(tmp_path, [{"pipeline": PIPELINE, "error": "observe: no load"}])
    result = overview(tmp_path)
    assert result.series.observed_peak_rps == (None,) and result.series.total_cores == (None,)
    assert result.to_dict()["decisions"][0]["forecast_rps"] is None


# --- MLflow ----------------------------------------------------------------------------------------------


def test_mlflow_ui_links_come_from_an_http_uri_or_the_override_and_not_from_a_local_store():
    assert mlflow_ui_base("http://mlflow:5000/") == "http://mlflow:5000"
    assert mlflow_ui_base("http://mlflow:5000", "https://mlflow.example.org/") == "https://mlflow.example.org"
    assert mlflow_ui_base("sqlite:////tmp/mlflow.db") is None
    assert mlflow_ui_base("/tmp/mlruns") is None and mlflow_ui_base("file:///tmp/mlruns") is None
    assert mlflow_ui_base("sqlite:////tmp/mlflow.db", "http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert run_url("http://m:5000", "3", "abc") == "http://m:5000/#/experiments/3/runs/abc"
    assert run_url(None, "3", "abc") is None


def test_a_sqlite_store_gives_the_day_runs_and_profiling_rounds_without_urls_unless_overridden(
    tmp_path: Path,
):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rows = record(tmp_path, [tick(10, "unchanged", SMALL, SMALL), tick(11, "unchanged", SMALL, SMALL)] * 3)
    for row in (rows[0], rows[-1]):  # one on each day
        log_to_mlflow(uri, PIPELINE, row, pd.DataFrame([row]))
    round_id = start_profiling_round(uri, PROFILING_EXPERIMENT, PIPELINE, {})
    start_profiling_round(uri, PROFILING_EXPERIMENT, "video", {})  # another pipeline's: not linked

    links = overview(tmp_path, uri).mlflow
    assert links.error == "" and links.ui_url is None and "no MLflow UI address" in links.note
    labels = [run.label for run in links.runs]
    assert labels[:2] == ["adaptation on 2026-12-02 (UTC)", "adaptation on 2026-12-01 (UTC)"]
    assert len(labels) == 3 and labels[2].startswith("profiling round profile digit-strips")
    assert links.runs[2].run_id == round_id and all(run.url is None for run in links.runs)

    linked = overview(tmp_path, uri, ui_override="http://127.0.0.1:5000").mlflow
    day = linked.runs[0]
    assert day.url == f"http://127.0.0.1:5000/#/experiments/{day.experiment_id}/runs/{day.run_id}"
    assert linked.note == ""


def test_a_missing_sqlite_store_is_not_created_by_looking(tmp_path: Path):
    links = mlflow_links(f"sqlite:///{tmp_path / 'nothing' / 'mlflow.db'}", PIPELINE, 2)
    assert "no MLflow store yet" in links.note and links.runs == () and links.error == ""
    assert not (tmp_path / "nothing").exists()


def test_an_unreachable_mlflow_server_is_said_and_the_page_still_shows_the_tables(tmp_path: Path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    record(tmp_path, [tick(10, "unchanged", SMALL, SMALL)])
    result = overview(tmp_path, f"http://127.0.0.1:{port}")
    assert result.mlflow.error.startswith(f"MLflow at http://127.0.0.1:{port} could not be reached")
    assert "Connection refused" in result.mlflow.error
    assert result.ticks == 1 and result.running is not None
    assert "could not be reached" in pipeline_page(result, "/ipa")


# --- pipelines, empty pages and the HTML ----------------------------------------------------------------


def test_the_shipped_pipelines_are_named_as_their_spec_files():
    assert shipped_pipelines() == [load_spec(path).name for path in shipped_spec_paths()]


def test_known_pipelines_are_the_shipped_and_the_recorded_ones_and_others_are_unknown(tmp_path: Path):
    assert {"digit-strips", "language-routing", "video"} <= set(known_pipelines(tmp_path))
    row = decision_row({"pipeline": "my-own"}, "r", START)
    append_decision(tmp_path, "my-own", row)
    assert "my-own" in known_pipelines(tmp_path)
    listing = {p.name: p for p in pipeline_listing(tmp_path)}
    assert (listing["my-own"].shipped, listing["my-own"].latest_day_recorded) == (False, "2026-12-01")
    assert listing["video"].shipped and listing["video"].latest_day_recorded is None
    for name in ("nope", "../digit-strips", "Digit-Strips"):
        with pytest.raises(UnknownPipelineError, match=r"known pipelines: .*digit-strips"):
            pipeline_overview(tmp_path, "sqlite:///x.db", name, today=date(2026, 12, 2))


def test_a_pipeline_without_decisions_says_so_and_how_to_get_some(tmp_path: Path):
    result = overview(tmp_path)
    assert result.ticks == 0 and result.running is None and result.decisions == ()
    assert "make adapt" in result.how_to_record and "ipa_adapt" in result.how_to_record
    page = pipeline_page(result, "/ipa", series_plot_png(result.series, PIPELINE))
    assert "No decisions recorded for digit-strips" in page and "digit-strips" in result.how_to_record
    assert "<img" not in page


def test_the_page_escapes_recorded_text_and_carries_the_plot(tmp_path: Path):
    evil = "<script>alert('x')</script> & more"
    degraded = tick(10, "unchanged", SMALL, SMALL)
    degraded["plan"] = {**degraded["plan"], "degraded": True, "reason": evil}
    record(tmp_path, [tick(9, "unchanged", SMALL, SMALL), degraded])
    result = overview(tmp_path)
    page = pipeline_page(result, "/base/ipa", series_plot_png(result.series, PIPELINE))
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in page
    assert "DEGRADED" in page and "detect=d-small/b1/c1/x1" in page
    assert '<a href="/base/ipa/pipelines">' in page and 'href="/base/ipa/api/pipelines/digit-strips"' in page
    assert re.search(r'src="data:image/png;base64,[A-Za-z0-9+/=]{1000,}"', page)
    index = index_page([*pipeline_listing(tmp_path)], "/base/ipa")
    assert '<a href="/base/ipa/pipelines/digit-strips">digit-strips</a>' in index
