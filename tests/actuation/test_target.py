"""The one apply procedure: order, no write for no change, dry run, rollback, read-back; and the in-memory
target, which refuses what the real targets refuse."""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest

from ipa_tasks.actuation.config import PipelineConfig, StageConfig, Step
from ipa_tasks.actuation.memory import InMemoryTarget
from ipa_tasks.actuation.target import ApplyReport, TargetError, apply_change
from ipa_tasks.spec import PipelineSpec, load_spec, resolve_spec_path


@pytest.fixture(scope="module")
def spec() -> PipelineSpec:
    return load_spec(resolve_spec_path("digit-strips"))


def cfg(variant: str, batch: int = 1, replicas: int = 1, cores: int = 1) -> StageConfig:
    return StageConfig(variant, batch, cores, replicas)


class FlakyTarget:
    """A target in memory whose writes fail for the steps it is told to fail."""

    name = "memory"

    def __init__(self, running: PipelineConfig, fail: Mapping[tuple[str, str], int] | None = None) -> None:
        self.running = dict(running)
        self.fail = dict(fail or {})  # (kind, stage) -> how many attempts fail
        self.writes: list[Step] = []

    def read(self, spec: PipelineSpec) -> PipelineConfig:
        return dict(self.running)

    def apply_step(self, spec: PipelineSpec, step: Step) -> None:
        key = (step.kind, step.stage)
        if self.fail.get(key, 0) > 0:
            self.fail[key] -= 1
            raise TargetError(f"injected failure of {step.kind} on {step.stage}")
        self.writes.append(step)
        self.running[step.stage] = step.after

    def remove(self, spec: PipelineSpec, stage: str) -> None:
        self.running.pop(stage)

    def not_ready(self, spec: PipelineSpec, config: Mapping[str, StageConfig]) -> list[str]:
        return []


BEFORE = {"detect": cfg("det_cc", 1, 2), "classify": cfg("cls_mlp_s", 4, 4)}
AFTER = {"detect": cfg("det_fcn_s", 2, 3), "classify": cfg("cls_mlp_s", 4, 1)}


def test_a_change_is_applied_in_order_and_read_back(spec):
    target = FlakyTarget(BEFORE)
    report = apply_change(target, spec, BEFORE, AFTER, log=lambda _: None)
    assert report.status == "applied" and report.changed
    assert [(s.kind, s.stage) for s in target.writes] == [
        ("scale_out", "detect"),
        ("switch", "detect"),
        ("scale_in", "classify"),
    ]
    assert report.running == AFTER and target.running == AFTER


def test_no_change_and_dry_run_write_nothing(spec):
    target = FlakyTarget(BEFORE)
    assert apply_change(target, spec, BEFORE, dict(BEFORE), log=lambda _: None).status == "unchanged"
    lines: list[str] = []
    report = apply_change(target, spec, BEFORE, AFTER, dry_run=True, log=lines.append)
    assert report.status == "dry_run" and len(report.steps) == 3
    assert target.writes == [] and target.running == BEFORE
    assert any(line.startswith("would apply: detect: scale out") for line in lines)


def test_a_failure_part_way_rolls_back_what_was_done(spec):
    target = FlakyTarget(BEFORE, fail={("scale_in", "classify"): 1})
    report = apply_change(target, spec, BEFORE, AFTER, log=lambda _: None)
    assert report.status == "rolled_back"
    assert [s.kind for s in report.done] == ["scale_out", "switch"]
    assert target.running == BEFORE and report.running == BEFORE
    assert "injected failure of scale_in on classify" in report.message


def test_a_rollback_that_fails_too_is_reported_with_what_runs(spec):
    # The switch fails, and so does undoing the scale-out before it (a scale-in): detect keeps its extra
    # replica.
    target = FlakyTarget(BEFORE, fail={("switch", "detect"): 2, ("scale_in", "detect"): 1})
    report = apply_change(target, spec, BEFORE, AFTER, log=lambda _: None)
    assert report.status == "inconsistent"
    assert target.running["detect"] == cfg("det_cc", 1, 3)
    assert "det_cc batch 1 x3" in report.message


class BrokenTarget(FlakyTarget):
    """Raises what no target should (a bug, a client library's own error) on one step."""

    def apply_step(self, spec: PipelineSpec, step: Step) -> None:
        if step.kind == "switch" and step.after.variant == "det_fcn_s":
            raise KeyError("status")
        super().apply_step(spec, step)


def test_an_unexpected_exception_mid_apply_is_rolled_back_too(spec):
    target = BrokenTarget(BEFORE)
    report = apply_change(target, spec, BEFORE, AFTER, log=lambda _: None)
    assert report.status == "rolled_back" and target.running == BEFORE
    assert "KeyError: 'status'" in report.message


def test_a_write_that_landed_although_its_call_failed_is_undone(spec):
    class LandsThenFails(FlakyTarget):
        def apply_step(self, spec: PipelineSpec, step: Step) -> None:
            super().apply_step(spec, step)
            if step.kind == "switch" and step.after.variant == "det_fcn_s":
                raise TargetError("timed out (the write landed anyway)")

    target = LandsThenFails(BEFORE)
    report = apply_change(target, spec, BEFORE, AFTER, log=lambda _: None)
    assert report.status == "rolled_back" and target.running == BEFORE


def test_the_report_survives_xcom(spec):
    report = apply_change(FlakyTarget(BEFORE), spec, BEFORE, AFTER, log=lambda _: None)
    assert ApplyReport.from_dict(json.loads(json.dumps(report.to_dict()))) == report


def test_the_in_memory_target_keeps_each_pipelines_configuration(spec):
    target = InMemoryTarget()
    assert target.read(spec) == {}
    report = apply_change(target, spec, {}, AFTER, log=lambda _: None)
    assert report.status == "applied" and [s.kind for s in report.steps] == ["create", "create"]
    assert target.read(spec) == AFTER
    assert target.read(spec.model_copy(update={"name": "another"})) == {}


def test_the_in_memory_target_refuses_what_the_real_ones_refuse(spec):
    target = InMemoryTarget({spec.name: BEFORE})
    too_many = {**BEFORE, "detect": cfg("det_cc", 1, 99)}
    report = apply_change(target, spec, BEFORE, too_many, log=lambda _: None)
    assert report.status == "rolled_back" and "outside the spec's bounds 1..16" in report.message
    assert target.read(spec) == BEFORE
