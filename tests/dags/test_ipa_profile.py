"""``ipa_profile`` run for real with ``dag.test()``: real models profiled by the real job, the GX suite,
quarantine, the profile store and MLflow, in the session's temporary ``IPA_HOME``."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from ipa_tasks.profile_store import ProfileStore
from ipa_tasks.settings import current_settings

pytestmark = pytest.mark.slow

SPEC = """\
name: {name}
sla_s: 1.0
stages:
  - name: classify
    batch_sizes: [1, 2, 8]
    cores: [1]
    variants:
      - name: knn
        model: {{kind: python, uri: "tests.profiling_jobs.digits_variant:nearest_neighbors_with_item_cost"}}
      - name: backwards
        model: {{kind: python, uri: "tests.profiling_jobs.digits_variant:faster_with_bigger_batches"}}
"""


def run_round(conf: dict):

    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]).dags["ipa_profile"]
    return dag.test(run_conf=conf)


def child_runs(client, parent_run_id: str) -> dict[str, object]:
    parent = client.get_run(parent_run_id)
    runs = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}'")
    return {run.info.run_name: run for run in runs}


def test_a_round_publishes_good_variants_and_quarantines_a_broken_one(airflow_db, tmp_path: Path):
    from mlflow import MlflowClient

    spec = tmp_path / "digits-round.yaml"
    spec.write_text(SPEC.format(name="digits-round"))
    # The default runner, "auto", with no ipa_kubernetes connection: local processes.
    run = run_round({"pipelines": [str(spec)], "repetitions": 20, "warmup": 2})
    assert run.state == "success"

    store = ProfileStore(current_settings().profile_store)
    current = store.current("digits-round")
    assert current is not None
    assert set(current["variant"]) == {"knn"}, "the quarantined variant must never be published"
    assert sorted(current["batch_size"]) == [1, 2, 8]
    assert set(current["source"]) == {"measured"} and (current["repetitions"] == 20).all()
    (quarantined,) = (store.root / "digits-round" / "quarantine").iterdir()
    assert quarantined.name.endswith(".classify.backwards")
    assert "p50 latency does not fall" in (quarantined / "report.json").read_text()

    client = MlflowClient(tracking_uri=current_settings().tracking_uri)
    experiment = client.get_experiment_by_name("ipa-profiling")
    (parent,) = client.search_runs(
        [experiment.experiment_id],
        "tags.`ipa.pipeline` = 'digits-round' and tags.`ipa.kind` = 'profiling-round'",
    )
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["variants_passed"] == 1
    assert parent.data.metrics["variants_quarantined"] == 1
    assert parent.data.params["repetitions"] == "20"

    children = child_runs(client, parent.info.run_id)
    assert set(children) == {"classify/knn", "classify/backwards (quarantined)"}
    good, bad = children["classify/knn"], children["classify/backwards (quarantined)"]
    assert good.info.status == "FINISHED" and bad.info.status == "FAILED"
    history = client.get_metric_history(good.info.run_id, "latency_p50_s_c1")
    assert sorted(m.step for m in history) == [1, 2, 8]
    assert 0.9 < good.data.metrics["accuracy"] <= 1.0
    good_files = {f.path for f in client.list_artifacts(good.info.run_id)}
    assert {"profile.csv", "fits.csv", "latency_throughput.png"} <= good_files
    assert {f.path for f in client.list_artifacts(bad.info.run_id)} >= {"gx_report.json", "check_summary.txt"}


def test_asked_for_nothing_runnable_the_round_fails_before_profiling(airflow_db, tmp_path: Path):
    run = run_round({"pipelines": ["video"], "repetitions": 20})
    assert run.state == "failed"
    assert ProfileStore(current_settings().profile_store).current("video") is None


def test_a_demo_round_builds_registers_profiles_and_measures_end_to_end_accuracy(airflow_db, tmp_path: Path):
    from mlflow import MlflowClient

    variants = ["det_cc", "cls_mlp_s"]
    conf = {"pipelines": ["digit-strips"], "variants": variants, "batch_sizes": [1, 8], "cores": [1]}
    run = run_round({**conf, "repetitions": 20, "warmup": 2, "runner": "local"})
    assert run.state == "success"

    settings = current_settings()
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    for variant in variants:
        (version,) = client.search_model_versions(f"name = 'digit-strips.{variant}'")
        assert 0.0 < float(version.tags["ipa.accuracy"]) <= 1.0

    store = ProfileStore(settings.profile_store)
    current = store.current("digit-strips")
    assert set(current["variant"]) == set(variants)
    measured = pd.read_csv(store.current_path("digit-strips").parent / "end_to_end_accuracy.csv")
    assert measured[["detect", "classify"]].values.tolist() == [["det_cc", "cls_mlp_s"]]
    assert 0.0 <= measured.loc[0, "accuracy"] <= 1.0

    experiment = client.get_experiment_by_name("ipa-profiling")
    rounds = "tags.`ipa.pipeline` = 'digit-strips' and tags.`ipa.kind` = 'profiling-round'"
    (parent,) = client.search_runs([experiment.experiment_id], rounds)
    assert parent.data.metrics["n_configurations"] == 1
    gap = pd.read_csv(
        client.download_artifacts(
            parent.info.run_id, "pipeline_accuracy/measured_vs_product.csv", str(tmp_path)
        )
    )
    # Measured end to end, not multiplied: the stage accuracies' product is a different number.
    assert gap.loc[0, "measured"] == pytest.approx(measured.loc[0, "accuracy"])
    assert abs(gap.loc[0, "gap"]) > 1e-3
    files = {f.path for f in client.list_artifacts(parent.info.run_id, "pipeline_accuracy")}
    assert "pipeline_accuracy/measured_vs_product.png" in files
