"""Every shipped spec comes with a profile table that covers it, passes the profile check and plans."""

from __future__ import annotations

from pathlib import Path

import pytest

from ipa_tasks.optimizer.planner import Planner
from ipa_tasks.profile_checks import check_profile
from ipa_tasks.profiles import read_profile, variant_accuracy
from ipa_tasks.spec import load_spec, shipped_spec_paths

SPECS = shipped_spec_paths()
MEASURED = [p for p in SPECS if "measured" in str(load_spec(p).profiles)]


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_the_shipped_profile_covers_every_variant_and_passes_its_checks(path: Path):
    spec = load_spec(path)
    profile_path = spec.default_profiles_path()
    assert profile_path is not None and profile_path.exists(), f"{path.name} names no shipped profile"
    profile = read_profile(profile_path)
    assert set(profile["pipeline"]) == {spec.name}
    covered = set(map(tuple, profile[["stage", "variant"]].to_numpy()))
    assert covered == set(spec.select_variants())
    check = check_profile(profile)
    assert check.success, check.summary()


@pytest.mark.parametrize(
    "path", [p for p in SPECS if "measured" in str(load_spec(p).profiles)], ids=lambda p: p.stem
)
def test_measured_profiles_agree_with_the_specs_accuracies(path: Path):
    spec = load_spec(path)
    profiled = variant_accuracy(read_profile(spec.default_profiles_path()))
    for stage in spec.stages:
        for variant in stage.variants:
            assert profiled[(stage.name, variant.name)] == pytest.approx(variant.accuracy, abs=1e-3)


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_a_light_load_gets_a_plan_within_the_sla(path: Path):
    planner = Planner.from_files(path, None)
    plan = planner.plan(1.0)
    assert not plan.degraded and plan.latency_s <= planner.spec.sla_s
