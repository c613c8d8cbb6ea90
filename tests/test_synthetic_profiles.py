"""The synthetic profiles of IPA's pipelines and the shipped specs that use them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ipa_tasks.optimizer.planner import Planner
from ipa_tasks.profiles import read_profile
from ipa_tasks.spec import PipelineSpec, load_spec, shipped_specs_dir
from ipa_tasks.synthetic_profiles import (
    ANCHOR_TOLERANCE,
    ANCHORS,
    PIPELINES,
    Anchor,
    ipa_sla_rule_s,
    main,
    profile_filename,
    synthetic_profile,
)

ACCURACIES_YAML = Path(__file__).parents[1].parent / "shared" / "data" / "ipa" / "accuracies.yaml"
ASR_STAGE = "audio"


def _spec(pipeline: str) -> PipelineSpec:
    return load_spec(shipped_specs_dir() / f"{pipeline}.yaml")


@pytest.mark.parametrize("anchor", ANCHORS, ids=lambda a: f"{a.variant}-b{a.batch_size}-c{a.cores}")
def test_anchor_is_reproduced(anchor: Anchor) -> None:
    profile = synthetic_profile("video")
    row = profile[
        (profile["variant"] == anchor.variant)
        & (profile["batch_size"] == anchor.batch_size)
        & (profile["cores"] == anchor.cores)
    ].iloc[0]
    if anchor.latency_p99_s is not None:
        assert row["latency_p99_s"] == pytest.approx(anchor.latency_p99_s, rel=ANCHOR_TOLERANCE)
    if anchor.throughput_rps is not None:
        assert row["throughput_rps"] == pytest.approx(anchor.throughput_rps, rel=ANCHOR_TOLERANCE)


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_ipa_sla_rule_gives_back_the_published_sla(pipeline: str) -> None:
    # The scale of the families without anchors rests on this (see the module docstring).
    assert ipa_sla_rule_s(pipeline) == pytest.approx(_spec(pipeline).sla_s, rel=0.10)


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_shipped_spec_loads_and_matches_the_generator(pipeline: str) -> None:
    spec = _spec(pipeline)
    assert spec.name == pipeline
    assert "SYNTHETIC" in spec.description
    assert spec.default_profiles_path() == shipped_specs_dir() / profile_filename(pipeline)
    stages = tuple((stage.name, tuple(v.name for v in stage.variants)) for stage in spec.stages)
    assert stages == PIPELINES[pipeline]


def test_shipped_csvs_equal_what_the_generator_writes(tmp_path: Path) -> None:
    assert main(["--out", str(tmp_path)]) == 0
    for pipeline in PIPELINES:
        name = profile_filename(pipeline)
        assert (tmp_path / name).read_bytes() == (shipped_specs_dir() / name).read_bytes(), (
            f"{name} is stale: regenerate with `python -m ipa_tasks.synthetic_profiles`"
        )


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_profile_is_marked_synthetic(pipeline: str) -> None:
    profile = read_profile(shipped_specs_dir() / profile_filename(pipeline))
    assert set(profile["source"]) == {"synthetic"}
    assert set(profile["host"]) == {"synthetic"}
    assert set(profile["repetitions"]) == {0}


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_latency_grows_with_batch_and_falls_with_cores(pipeline: str) -> None:
    profile = synthetic_profile(pipeline)
    columns = ["latency_p50_s", "latency_p95_s", "latency_p99_s"]
    for _, group in profile.groupby(["stage", "variant", "cores"]):
        assert (group.sort_values("batch_size")[columns].diff().dropna() >= 0).all().all()
    for _, group in profile.groupby(["stage", "variant", "batch_size"]):
        assert (group.sort_values("cores")[columns].diff().dropna() <= 0).all().all()
    assert (profile["latency_p50_s"] <= profile["latency_p95_s"]).all()
    assert (profile["latency_p95_s"] <= profile["latency_p99_s"]).all()


@pytest.mark.skipif(not ACCURACIES_YAML.exists(), reason=f"IPA's accuracies are not at {ACCURACIES_YAML}")
@pytest.mark.parametrize("pipeline", PIPELINES)
def test_spec_accuracies_are_the_published_ones(pipeline: str) -> None:
    published = yaml.safe_load(ACCURACIES_YAML.read_text(encoding="utf-8"))[pipeline]
    for stage in _spec(pipeline).stages:
        values = published[stage.name]
        assert {v.name for v in stage.variants} == set(values)
        for variant in stage.variants:
            value = values[variant.name]
            # IPA stores ASR accuracy as -WER so that larger is better.
            expected = (100.0 + value) / 100.0 if stage.name == ASR_STAGE else value / 100.0
            assert variant.accuracy == pytest.approx(expected, rel=1e-12), f"{stage.name}/{variant.name}"


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_planner_serves_a_moderate_load_and_degrades_at_an_absurd_one(pipeline: str) -> None:
    spec = _spec(pipeline)
    planner = Planner(spec, read_profile(spec.default_profiles_path()))
    plan = planner.plan(10.0)
    assert not plan.degraded, plan.reason
    assert plan.latency_s <= spec.sla_s
    assert plan.capacity_rps > 10.0
    assert planner.plan(1e6).degraded
