"""Planning a round, checking each variant's table (with quarantine), merging into the published profile."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ipa_tasks.profile_store import ProfileStore
from ipa_tasks.profiles import ProfileError
from ipa_tasks.profiling_job import ProfilingJob
from ipa_tasks.profiling_round import RoundError, check_variant_table, merged_profile, plan_jobs
from ipa_tasks.spec import load_spec
from tests.optimizer.instances import profile_rows

SPEC = """\
name: digits
sla_s: 1.0
stages:
  - name: detect
    batch_sizes: [1, 2, 4, 8]
    cores: [1, 2]
    variants:
      - {name: small, model: {kind: python, uri: "tests.profiling_jobs.digits_variant:logistic"}}
      - {name: published, model: {kind: reference, uri: "yolov5n"}}
  - name: classify
    batch_sizes: [1, 4]
    cores: [1]
    variants:
      - {name: knn, model: {kind: python, uri: "tests.profiling_jobs.digits_variant:nearest_neighbors"}}
"""


@pytest.fixture
def spec(tmp_path: Path):
    path = tmp_path / "digits.yaml"
    path.write_text(SPEC)
    return load_spec(path)


def plan(spec, tmp_path: Path, **kwargs) -> list[ProfilingJob]:
    return plan_jobs(spec, "digits.yaml", tmp_path / "round", repetitions=20, warmup=2, **kwargs)


def test_plan_defaults_to_every_runnable_variant_with_its_stages_lists(spec, tmp_path: Path):
    jobs = plan(spec, tmp_path)
    assert [j.label for j in jobs] == ["detect/small", "classify/knn"]
    assert jobs[0].batch_sizes == (1, 2, 4, 8) and jobs[0].cores == (1, 2)
    assert jobs[1].batch_sizes == (1, 4) and jobs[1].cores == (1,)
    assert jobs[1].out == str(tmp_path / "round" / "classify.knn.parquet")


def test_plan_honours_selections_and_overrides(spec, tmp_path: Path):
    (job,) = plan(spec, tmp_path, variants=["knn"], batch_sizes=[16, 2, 2], cores=[2])
    assert (job.label, job.batch_sizes, job.cores) == ("classify/knn", (2, 16), (2,))
    assert [j.label for j in plan(spec, tmp_path, stages=["detect"])] == ["detect/small"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"variants": ["nope"]}, "no variant\\(s\\) nope"),
        ({"stages": ["nope"]}, "no stage\\(s\\) nope"),
        ({"variants": ["published"]}, "kind 'reference', which cannot be profiled"),
        ({"batch_sizes": [0, 4]}, "batch_sizes must all be >= 1"),
    ],
)
def test_plan_rejects_what_the_spec_does_not_allow(spec, tmp_path: Path, kwargs, message):
    with pytest.raises(RoundError, match=message):
        plan(spec, tmp_path, **kwargs)


def measured(variant: str = "knn", stage: str = "classify", base: float = 0.01) -> pd.DataFrame:
    rows = pd.DataFrame(profile_rows("digits", stage, variant, base, [1, 4], [1], 0.9))
    return rows.assign(repetitions=20)


def job_writing(table: pd.DataFrame | None, tmp_path: Path) -> ProfilingJob:
    out = tmp_path / "round" / "classify.knn.parquet"
    if table is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        table.to_parquet(out)
    return ProfilingJob("digits", "digits.yaml", "classify", "knn", (1, 4), (1,), 20, 2, str(out))


def test_a_good_table_passes_and_is_not_quarantined(tmp_path: Path):
    store = ProfileStore(tmp_path / "store")
    outcome, table, check = check_variant_table(job_writing(measured(), tmp_path), store, "r1")
    assert outcome.status == "passed" and check.success and len(table) == 2
    assert not (tmp_path / "store" / "digits" / "quarantine").exists()


def test_a_broken_table_is_quarantined_with_its_report(tmp_path: Path):
    broken = measured()
    broken.loc[1, "accuracy"] = 1.4
    store = ProfileStore(tmp_path / "store")
    outcome, _, check = check_variant_table(job_writing(broken, tmp_path), store, "r1")
    assert outcome.status == "quarantined" and not check.success
    assert Path(outcome.table).parent == tmp_path / "store" / "digits" / "quarantine" / "r1.classify.knn"
    assert "accuracy is in [0, 1]" in Path(outcome.report).read_text()
    assert store.current("digits") is None


def test_rows_of_another_variant_are_quarantined_even_if_they_look_fine(tmp_path: Path):
    store = ProfileStore(tmp_path / "store")
    outcome, _, check = check_variant_table(job_writing(measured(variant="other"), tmp_path), store, "r1")
    assert outcome.status == "quarantined"
    assert any("belong to another stage or variant" in f["description"] for f in check.failures)


def test_a_job_that_wrote_nothing_is_missing(tmp_path: Path):
    outcome, table, check = check_variant_table(job_writing(None, tmp_path), ProfileStore(tmp_path), "r1")
    assert (outcome.status, table, check) == ("missing", None, None)


def test_merge_replaces_reprofiled_variants_keeps_the_others_and_fills_batches(spec):
    current = pd.concat([measured(stage="detect", variant="small"), measured(base=0.05)], ignore_index=True)
    new_knn = measured(base=0.02)
    merged = merged_profile(spec, current, [new_knn])
    knn = merged[(merged["variant"] == "knn")].set_index("batch_size")
    assert knn.loc[1, "latency_p50_s"] == pytest.approx(new_knn.loc[0, "latency_p50_s"])
    small = merged[merged["variant"] == "small"]
    # detect/small was not re-profiled: its rows stay, and batch size 2 (spec, inside 1..4) is fitted.
    assert sorted(small["batch_size"]) == [1, 2, 4]
    assert set(small[small["batch_size"] == 2]["source"]) == {"fitted"}
    with pytest.raises(ProfileError, match="nothing to merge"):
        merged_profile(spec, current, [])


def test_open_round_refuses_a_variant_filter_over_several_pipelines_before_opening_runs(spec, tmp_path):
    from mlflow import MlflowClient

    from ipa_tasks.profiling_round import open_round
    from ipa_tasks.settings import Settings
    from ipa_tasks.tracking import default_tracking_uri

    settings = Settings(home=tmp_path, tracking_uri=default_tracking_uri(tmp_path))
    params = {"pipelines": [str(spec.source_path), "video"], "stages": [], "variants": ["knn"]}
    params |= {"batch_sizes": [], "cores": [], "repetitions": 20, "warmup": 2}
    with pytest.raises(RoundError, match="single pipeline"):
        open_round(settings, params, "r1", "ipa-profiling", print)
    with pytest.raises(RoundError, match="kind 'python'"):
        open_round(
            settings,
            {**params, "variants": [], "pipelines": [str(spec.source_path), "video"]},
            "r1",
            "x",
            print,
        )
    assert (
        MlflowClient(tracking_uri=settings.tracking_uri).search_experiments(filter_string="name = 'x'") == []
    )
    jobs = open_round(
        settings, {**params, "pipelines": [str(spec.source_path)]}, "r1", "ipa-profiling", print
    )
    assert [j.label for j in jobs] == ["classify/knn"] and jobs[0].round_id == "r1" and jobs[0].parent_run_id
