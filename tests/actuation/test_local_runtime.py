"""The local runtime target against a real runtime process: ``apply_change`` creates a stage, scales it
out, switches its variant, changes only its batch size (same processes) and scales it in, each read back;
a switch to a variant that cannot start is rolled back; a missing or dead runtime is a plain TargetError.

The runtime and its spec come from ``tests/serving/test_runtime.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from ipa_tasks.actuation.config import StageConfig, Step
from ipa_tasks.actuation.local_runtime import LocalRuntimeTarget
from ipa_tasks.actuation.target import TargetError, apply_change
from ipa_tasks.serving.runtime import runtime_file
from ipa_tasks.serving.stage_server import free_port
from ipa_tasks.spec import PipelineSpec, load_spec
from tests.serving.test_runtime import (
    PIPELINE,
    STAGE,
    RunningRuntime,
    call,
    start_runtime,
    stop_runtime,
    write_spec,
)

START = StageConfig(variant="logistic", batch_size=4, cores=1, replicas=1)


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRuntime]:
    running = start_runtime(tmp_path_factory.mktemp("target"))
    try:
        yield running
    finally:
        stop_runtime(running)


@pytest.fixture(scope="module")
def spec(runtime: RunningRuntime) -> PipelineSpec:
    return load_spec(runtime.spec_path)


def processes(runtime: RunningRuntime) -> list[int]:
    status, body = call(f"{runtime.url}/pipelines/{PIPELINE}")
    assert status == 200, body
    return sorted(p["pid"] for p in body["stages"][STAGE]["processes"])


def served_batch_sizes(runtime: RunningRuntime) -> list[int]:
    """What each replica's own ``/readyz`` says its batch size is."""
    body = call(f"{runtime.url}/pipelines/{PIPELINE}")[1]
    return [call(f"{p['url']}/readyz")[1]["batch_size"] for p in body["stages"][STAGE]["processes"]]


def test_a_missing_or_dead_runtime_is_a_target_error(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path))
    target = LocalRuntimeTarget(tmp_path / "home")
    with pytest.raises(TargetError, match=r"the local runtime is not running .*python -m ipa_tasks\.serving"):
        target.read(spec)
    path = runtime_file(tmp_path / "home")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"url": f"http://127.0.0.1:{free_port()}", "pid": 1, "pipelines": {}}))
    with pytest.raises(TargetError, match=r"the local runtime is not running .*refuses connections"):
        target.not_ready(spec, {STAGE: START})


def test_apply_change_creates_scales_switches_and_rebatches_a_stage(
    runtime: RunningRuntime, spec: PipelineSpec
) -> None:
    target = LocalRuntimeTarget(runtime.home)
    assert target.name == f"local runtime at {runtime.url}"
    target.remove(spec, STAGE)
    assert target.read(spec) == {}
    current: dict[str, StageConfig] = {}
    plan = [
        ("create", START),
        ("scale_out", replace(START, replicas=2)),
        ("switch", replace(START, variant="knn", replicas=2)),
        ("batch", replace(START, variant="knn", replicas=2, batch_size=8)),
        ("scale_in", replace(START, variant="knn", replicas=1, batch_size=8)),
    ]
    for kind, want in plan:
        before = processes(runtime) if current else []
        report = apply_change(target, spec, current, {STAGE: want}, ready_timeout_s=30, log=lambda _: None)
        assert report.status == "applied", report.message
        assert [s.kind for s in report.steps] == [kind]
        assert target.read(spec) == {STAGE: want} == report.running
        assert target.not_ready(spec, {STAGE: want}) == [] and not report.not_ready
        after = processes(runtime)
        assert len(after) == want.replicas
        if kind == "batch":
            assert after == before, "a batch-size change must not restart the replicas"
            assert served_batch_sizes(runtime) == [8] * want.replicas, "the replicas themselves use it"
        if kind == "switch":
            assert not set(after) & set(before), "a switch replaces every replica"
        current = {STAGE: want}


def test_a_switch_that_cannot_start_is_rolled_back(runtime: RunningRuntime, spec: PipelineSpec) -> None:
    target = LocalRuntimeTarget(runtime.home)
    current = {STAGE: START}
    assert apply_change(target, spec, target.read(spec), current, log=lambda _: None).status in (
        "applied",
        "unchanged",
    )
    before = processes(runtime)
    broken = {STAGE: replace(START, variant="broken")}
    report = apply_change(target, spec, current, broken, log=lambda _: None)
    assert report.status == "rolled_back", report.message
    assert "exited with status 1" in report.error
    assert target.read(spec) == current and processes(runtime) == before


def test_a_step_the_spec_does_not_offer_is_refused_before_any_call(
    runtime: RunningRuntime, spec: PipelineSpec
) -> None:
    target = LocalRuntimeTarget(runtime.home)
    for after in (replace(START, variant="nope"), replace(START, cores=4), replace(START, replicas=9)):
        with pytest.raises(TargetError, match="refusing"):
            target.apply_step(spec, Step("switch", STAGE, START, after))
    target.remove(spec, STAGE)
    assert target.read(spec) == {}
    assert target.not_ready(spec, {STAGE: START}) == [f"stage {STAGE}: not running"]
