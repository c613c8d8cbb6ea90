"""The end of a round: drift against the published profile is flagged, logged and visible; the merged
profile is published; a round where nothing passed publishes nothing and says so."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ipa_tasks.profile_checks import check_profile
from ipa_tasks.profile_store import ProfileStore
from ipa_tasks.profiling_job import ProfilingJob
from ipa_tasks.profiling_publish import publish_round
from ipa_tasks.settings import current_settings
from ipa_tasks.tracking import start_profiling_round
from tests.optimizer.instances import profile_rows

SPEC = """\
name: {name}
sla_s: 1.0
stages:
  - name: classify
    batch_sizes: [1, 4]
    cores: [1]
    variants:
      - {{name: knn, model: {{kind: python, uri: "tests.profiling_jobs.digits_variant:nearest_neighbors"}}}}
      - {{name: logistic, model: {{kind: python, uri: "tests.profiling_jobs.digits_variant:logistic"}}}}
"""


def table(variant: str, base: float, accuracy: float) -> pd.DataFrame:
    return pd.DataFrame(profile_rows("p", "classify", variant, base, [1, 4], [1], 0.5)).assign(
        accuracy=accuracy
    )


def outcome(tmp_path: Path, spec: Path, name: str, variant: str, frame: pd.DataFrame | None) -> dict:
    tmp_path.mkdir(parents=True, exist_ok=True)
    parent = start_profiling_round(current_settings().tracking_uri, "ipa-profiling", name, {})
    path = tmp_path / f"{variant}.parquet"
    status = "missing"
    if frame is not None:
        frame.assign(pipeline=name).to_parquet(path)
        status = "passed"
    job = ProfilingJob(name, str(spec), "classify", variant, (1, 4), (1,), 20, 2, str(path), "r2", parent)
    return {
        "stage": "classify",
        "variant": variant,
        "status": status,
        "table": str(path),
        "job": job.to_dict(),
    }


@pytest.fixture
def spec(tmp_path: Path) -> tuple[str, Path]:
    name = f"drift-{tmp_path.name.lower().replace('_', '-')}"[:60]
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.format(name=name))
    return name, path


def test_drift_is_flagged_logged_and_the_merged_profile_published(spec, tmp_path: Path):
    from mlflow import MlflowClient

    name, path = spec
    store = ProfileStore(current_settings().profile_store)
    before = pd.concat([table("knn", 0.01, 0.95), table("logistic", 0.002, 0.90)]).assign(pipeline=name)
    assert store.publish(name, before, check_profile(before), "r1").published
    lines: list[str] = []
    # knn lost 10 points of accuracy and got twice as slow: both beyond the thresholds.
    result = outcome(tmp_path, path, name, "knn", table("knn", 0.02, 0.85))
    summary = publish_round([result], accuracy_drift=0.02, latency_drift=0.2, log=lines.append)

    assert summary[name]["published"] and summary[name]["drift_flagged"] == ["classify/knn"]
    drift_line = next(line for line in lines if line.startswith("DRIFT"))
    assert "accuracy -0.100" in drift_line and "+100%" in drift_line
    current = store.current(name)
    assert set(current["variant"]) == {"knn", "logistic"}, "logistic was not re-profiled and must stay"
    assert current[current["variant"] == "knn"]["accuracy"].eq(0.85).all()

    client = MlflowClient(tracking_uri=current_settings().tracking_uri)
    parent = client.get_run(result["job"]["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.metrics["drift_flagged"] == 1
    drift = pd.read_csv(client.download_artifacts(parent.info.run_id, "drift.csv", str(tmp_path)))
    assert drift.set_index("variant").loc["knn", "flagged"]


def test_a_round_where_nothing_passed_publishes_nothing_and_fails_its_run(spec, tmp_path: Path):
    from mlflow import MlflowClient

    name, path = spec
    result = outcome(tmp_path, path, name, "knn", None)
    summary = publish_round([result], accuracy_drift=0.02, latency_drift=0.2, log=print)
    assert not summary[name]["published"] and summary[name]["missing"] == ["classify/knn"]
    assert ProfileStore(current_settings().profile_store).current(name) is None
    run = MlflowClient(tracking_uri=current_settings().tracking_uri).get_run(result["job"]["parent_run_id"])
    assert run.info.status == "FAILED"


def test_a_failing_end_to_end_measurement_is_reported_and_the_profile_stays_published(
    spec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import ipa_tasks.profiling_publish as publishing

    def broken(*args, **kwargs):
        raise RuntimeError("held-out data unreadable")

    monkeypatch.setattr(publishing, "measure_pipeline_accuracy", broken)
    name, path = spec
    lines: list[str] = []
    result = outcome(tmp_path, path, name, "knn", table("knn", 0.01, 0.9))
    summary = publish_round([result], accuracy_drift=0.02, latency_drift=0.2, log=lines.append)
    assert summary[name]["published"]
    assert any("end-to-end accuracy not measured" in line and "unreadable" in line for line in lines)
    assert ProfileStore(current_settings().profile_store).current(name) is not None


def test_one_pipeline_failing_to_publish_leaves_the_others_published_and_every_run_finished(
    spec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from mlflow import MlflowClient

    import ipa_tasks.profiling_publish as publishing

    name, path = spec
    other_path = tmp_path / "other.yaml"
    other_path.write_text(SPEC.format(name=f"{name}-b"))
    original = publishing._publish_pipeline

    def fail_first(settings, pipeline, *args, **kwargs):
        if pipeline == name:
            raise OSError("disk full")
        return original(settings, pipeline, *args, **kwargs)

    monkeypatch.setattr(publishing, "_publish_pipeline", fail_first)
    first = outcome(tmp_path / "a", path, name, "knn", table("knn", 0.01, 0.9))
    second = outcome(tmp_path / "b", other_path, f"{name}-b", "knn", table("knn", 0.01, 0.9))
    summary = publish_round([first, second], accuracy_drift=0.02, latency_drift=0.2, log=print)
    assert not summary[name]["published"] and "disk full" in summary[name]["message"]
    assert summary[f"{name}-b"]["published"]
    client = MlflowClient(tracking_uri=current_settings().tracking_uri)
    statuses = [client.get_run(o["job"]["parent_run_id"]).info.status for o in (first, second)]
    assert statuses == ["FAILED", "FINISHED"]
