"""MLflow logging of a profiling round against a temporary SQLite store.

One round is logged once per module (creating the SQLite store costs seconds) and the tests read back what
landed: parent run, one child per variant, metric histories, artifacts, the accuracy gap and the summary.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from ipa_tasks.accuracy import MeasuredAccuracyTable
from ipa_tasks.latency_model import fit_profile
from ipa_tasks.synthetic_profiles import synthetic_profile
from ipa_tasks.tracking import (
    STEP_METRIC_COLUMNS,
    default_tracking_uri,
    finish_profiling_round,
    log_pipeline_accuracy,
    log_variant_profile,
    profiling_rounds,
    start_profiling_round,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EXPERIMENT = "ipa-profiling"
VARIANTS = {("crop", "yolov5n"): 0.457, ("classification", "resnet18"): 0.6975}
STAGE_ACCURACIES = [{"yolov5n": 0.457, "yolov5s": 0.568}, {"resnet18": 0.6975, "resnet101": 0.7737}]
MEASURED = {
    ("yolov5n", "resnet18"): 0.40,
    ("yolov5n", "resnet101"): 0.33,
    ("yolov5s", "resnet18"): 0.45,
    ("yolov5s", "resnet101"): 0.41,
}
ROUND_PARAMS = {"batch_sizes": [1, 2, 4, 8, 16, 32], "cores": [1, 2, 4, 8], "repetitions": 20}
pytestmark = pytest.mark.filterwarnings(
    # MLflow 3.17.2's SQLAlchemy store on SQLAlchemy 2.1 warns once when it builds its mappers; harmless.
    "ignore:The ``noload`` loader strategy is deprecated"
)
SUMMARY = {"variants_profiled": 2, "quarantined": 0, "quarantined_variants": [], "drift": "none"}


@dataclass(frozen=True)
class Round:
    home: Path
    uri: str
    parent_id: str
    child_ids: dict[tuple[str, str], str]
    profile: pd.DataFrame
    fits: pd.DataFrame
    gap: pd.DataFrame


@pytest.fixture(scope="module")
def logged_round(tmp_path_factory: pytest.TempPathFactory) -> Round:
    profile = synthetic_profile("video")
    profile = profile[profile["variant"].isin([v for _, v in VARIANTS])].reset_index(drop=True)
    fits = fit_profile(profile)
    table = MeasuredAccuracyTable("video", ("crop", "classification"))
    for configuration, accuracy in MEASURED.items():
        table.record(configuration, accuracy)
    gap = table.correlation_gap(STAGE_ACCURACIES)
    home = tmp_path_factory.mktemp("mlflow-home")
    uri = default_tracking_uri(home)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        parent_id = start_profiling_round(uri, EXPERIMENT, "video", ROUND_PARAMS)
        # The whole table and all fits go in; each child must keep only its own variant's rows.
        child_ids = {
            (stage, variant): log_variant_profile(
                uri, parent_id, "video", stage, variant, profile, fits, accuracy
            )
            for (stage, variant), accuracy in VARIANTS.items()
        }
        log_pipeline_accuracy(uri, parent_id, gap)
        finish_profiling_round(uri, parent_id, "FINISHED", SUMMARY)
    return Round(home, uri, parent_id, child_ids, profile, fits, gap)


@pytest.fixture
def client(logged_round: Round, monkeypatch: pytest.MonkeyPatch):
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    return MlflowClient(tracking_uri=logged_round.uri)


def _artifact_bytes(client, run_id: str, path: str, dst: Path) -> bytes:
    return Path(client.download_artifacts(run_id, path, str(dst))).read_bytes()


def test_default_store_is_sqlite_with_artifacts_beside_it(logged_round: Round, client):
    assert logged_round.uri == f"sqlite:///{logged_round.home.resolve()}/mlflow.db"
    assert (logged_round.home / "mlflow.db").is_file()
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment.artifact_location == (logged_round.home.resolve() / "mlartifacts").as_uri()
    assert any((logged_round.home / "mlartifacts").rglob("latency_throughput.png"))


def test_parent_run_has_params_tags_and_ends_finished_with_the_summary(logged_round: Round, client):
    run = client.get_run(logged_round.parent_id)
    assert run.info.run_name.startswith("profile video ")
    assert run.info.status == "FINISHED"
    assert run.data.tags["ipa.pipeline"] == "video"
    assert run.data.tags["ipa.kind"] == "profiling-round"
    assert run.data.params == {k: str(v) for k, v in ROUND_PARAMS.items()}
    assert run.data.metrics["variants_profiled"] == 2
    assert run.data.metrics["quarantined"] == 0
    assert run.data.tags["ipa.quarantined_variants"] == ""
    assert run.data.tags["ipa.drift"] == "none"


def test_one_child_per_variant_attached_to_the_parent(logged_round: Round, client):
    experiment = client.get_experiment_by_name(EXPERIMENT)
    children = client.search_runs(
        [experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{logged_round.parent_id}'"
    )
    assert {run.info.run_id for run in children} == set(logged_round.child_ids.values())
    for (stage, variant), run_id in logged_round.child_ids.items():
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert run.info.run_name == f"{stage}/{variant}"
        assert run.data.tags["ipa.stage"] == stage
        assert run.data.tags["ipa.variant"] == variant
        assert run.data.tags["ipa.source"] == "synthetic"
        assert run.data.params == {
            "stage": stage,
            "variant": variant,
            "cores": "1,2,4,8",
            "batch_sizes": "1,2,4,8,16,32",
            "n_batch_sizes": "6",
        }
        assert run.data.metrics["accuracy"] == pytest.approx(VARIANTS[(stage, variant)])


def test_metric_histories_have_one_step_per_batch_size_with_the_table_values(logged_round: Round, client):
    for (stage, variant), run_id in logged_round.child_ids.items():
        rows = logged_round.profile[logged_round.profile["variant"] == variant]
        for cores, group in rows.groupby("cores"):
            group = group.sort_values("batch_size")
            for column in STEP_METRIC_COLUMNS:
                history = sorted(
                    client.get_metric_history(run_id, f"{column}_c{cores}"), key=lambda m: m.step
                )
                assert [m.step for m in history] == group["batch_size"].tolist(), (stage, column, cores)
                assert [m.value for m in history] == pytest.approx(group[column].tolist(), rel=1e-12)


def test_fit_quality_metrics_match_the_latency_model(logged_round: Round, client):
    for (stage, variant), run_id in logged_round.child_ids.items():
        metrics = client.get_run(run_id).data.metrics
        fits = logged_round.fits[logged_round.fits["variant"] == variant]
        assert len(fits) == 3 * 4  # three quantiles, four core counts
        for fit in fits.itertuples():
            assert metrics[f"fit_r2_{fit.quantile}_c{fit.cores}"] == pytest.approx(fit.r2), stage
            assert metrics[f"fit_max_rel_error_{fit.quantile}_c{fit.cores}"] == pytest.approx(
                fit.max_relative_error
            )


def test_child_artifacts_are_the_variants_table_fits_and_a_png(logged_round: Round, client, tmp_path: Path):
    for (stage, variant), run_id in logged_round.child_ids.items():
        names = {a.path for a in client.list_artifacts(run_id)}
        assert names == {"profile.csv", "fits.csv", "latency_throughput.png"}
        dst = tmp_path / variant
        dst.mkdir()
        logged = pd.read_csv(client.download_artifacts(run_id, "profile.csv", str(dst)))
        expected = logged_round.profile[logged_round.profile["variant"] == variant]
        assert set(logged["stage"]) == {stage}
        assert len(logged) == len(expected) == 6 * 4
        merged = logged.merge(expected, on=["batch_size", "cores"], suffixes=("", "_expected"))
        assert merged["latency_p99_s"].tolist() == pytest.approx(merged["latency_p99_s_expected"].tolist())
        fits = pd.read_csv(client.download_artifacts(run_id, "fits.csv", str(dst)))
        assert set(fits["variant"]) == {variant}
        assert _artifact_bytes(client, run_id, "latency_throughput.png", dst).startswith(PNG_SIGNATURE)


def test_accuracy_gap_table_plot_and_metrics_land_on_the_parent(logged_round: Round, client, tmp_path: Path):
    run_id = logged_round.parent_id
    names = {a.path for a in client.list_artifacts(run_id, "pipeline_accuracy")}
    assert names == {"pipeline_accuracy/measured_vs_product.csv", "pipeline_accuracy/measured_vs_product.png"}
    logged = pd.read_csv(
        client.download_artifacts(run_id, "pipeline_accuracy/measured_vs_product.csv", str(tmp_path))
    )
    pd.testing.assert_frame_equal(logged, logged_round.gap, check_dtype=False)
    png = _artifact_bytes(client, run_id, "pipeline_accuracy/measured_vs_product.png", tmp_path)
    assert png.startswith(PNG_SIGNATURE)
    metrics = client.get_run(run_id).data.metrics
    gaps = logged_round.gap["gap"]
    assert metrics["accuracy_gap_mean_abs"] == pytest.approx(gaps.abs().mean())
    assert metrics["accuracy_gap_max_abs"] == pytest.approx(gaps.abs().max())
    assert metrics["accuracy_gap_mean"] == pytest.approx(gaps.mean())
    assert metrics["n_configurations"] == len(MEASURED)


def test_profiling_rounds_lists_the_round_and_nothing_else(logged_round: Round, monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    rounds = profiling_rounds(logged_round.uri, EXPERIMENT, "video")
    assert rounds["run_id"].tolist() == [logged_round.parent_id]
    assert rounds.loc[0, "status"] == "FINISHED"
    assert rounds.loc[0, "params.repetitions"] == "20"
    assert rounds.loc[0, "metrics.accuracy_gap_max_abs"] > 0
    assert rounds.loc[0, "end_time"] >= rounds.loc[0, "start_time"]
    assert profiling_rounds(logged_round.uri, EXPERIMENT, "nlp").empty
    assert profiling_rounds(logged_round.uri, "no-such-experiment", "video").empty


def test_bad_inputs_are_refused_before_anything_is_logged(logged_round: Round, monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    with pytest.raises(ValueError, match="no rows for video/crop/yolov5x"):
        log_variant_profile(
            logged_round.uri,
            logged_round.parent_id,
            "video",
            "crop",
            "yolov5x",
            logged_round.profile,
            None,
            None,
        )
    with pytest.raises(ValueError, match="status must be FINISHED or FAILED"):
        finish_profiling_round(logged_round.uri, logged_round.parent_id, "KILLED", {})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no configurations"):
        log_pipeline_accuracy(
            logged_round.uri,
            logged_round.parent_id,
            MeasuredAccuracyTable("video", ("crop", "classification")).correlation_gap(STAGE_ACCURACIES),
        )


def test_a_failing_child_and_round_end_failed_not_running(
    logged_round: Round, monkeypatch: pytest.MonkeyPatch
):
    from mlflow import MlflowClient

    import ipa_tasks.tracking as tracking

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    parent_id = start_profiling_round(logged_round.uri, "ipa-profiling-failures", "video", {})

    def broken_plot(*args, **kwargs):
        raise RuntimeError("plot failed")

    monkeypatch.setattr(tracking, "variant_plot", broken_plot)
    with pytest.raises(RuntimeError, match="plot failed"):
        log_variant_profile(
            logged_round.uri, parent_id, "video", "crop", "yolov5n", logged_round.profile, None, None
        )
    finish_profiling_round(logged_round.uri, parent_id, "FAILED", {"variants_profiled": 0})
    client = MlflowClient(tracking_uri=logged_round.uri)
    experiment = client.get_experiment_by_name("ipa-profiling-failures")
    (child,) = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'")
    assert child.info.status == "FAILED"
    assert client.get_run(parent_id).info.status == "FAILED"
    rounds = profiling_rounds(logged_round.uri, "ipa-profiling-failures", "video")
    assert rounds["status"].tolist() == ["FAILED"]


def test_importing_the_module_does_not_import_mlflow_or_matplotlib():
    code = (
        "import sys, ipa_tasks.tracking; print(sorted({'mlflow', 'matplotlib', 'pandas'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
