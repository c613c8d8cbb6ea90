"""The fixed-services target (docker-compose) against a real stage-server process: it reads what the
server runs from /readyz, changes a batch size in place, and refuses, before writing anything, every step
a fixed service cannot take."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ipa_tasks.actuation.config import StageConfig, Step
from ipa_tasks.actuation.stage_servers import ELSEWHERE, StageServersTarget, target_from_environment
from ipa_tasks.actuation.target import TargetError, apply_change
from ipa_tasks.adaptation.steps import make_target
from ipa_tasks.serving.stage_server import wait_until_ready
from ipa_tasks.settings import Settings
from ipa_tasks.spec import PipelineSpec, load_spec
from tests.serving.test_stage_server import (
    LOAD_S_VARIABLE,
    PREDICT_S_VARIABLE,
    SPEC,
    START_TIMEOUT_S,
    Server,
    call,
    launch,
    terminate,
)

RUNNING = StageConfig("slow", 4, 1, 1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    started = launch(tmp_path_factory.mktemp("fixed"), env={LOAD_S_VARIABLE: "0", PREDICT_S_VARIABLE: "0.01"})
    try:
        wait_until_ready(started.url, timeout_s=START_TIMEOUT_S, process=started.process)
        yield started
    finally:
        terminate(started)


@pytest.fixture
def spec(tmp_path: Path) -> PipelineSpec:
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC, encoding="utf-8")
    return load_spec(path)


def target_for(server: Server) -> StageServersTarget:
    # Only the echo stage runs; the classify stage's address (the template's) refuses connections.
    return StageServersTarget("http://127.0.0.1:9/{name}", urls={"echo": server.url}, timeout_s=2.0)


def test_it_reads_variant_batch_and_cores_from_readyz_and_leaves_out_what_does_not_answer(
    server: Server, spec: PipelineSpec
) -> None:
    assert target_for(server).read(spec) == {"echo": RUNNING}


def test_a_batch_only_change_is_applied_in_place(server: Server, spec: PipelineSpec) -> None:
    target = target_for(server)
    report = apply_change(
        target,
        spec,
        {"echo": RUNNING},
        {"echo": StageConfig("slow", 2, 1, 1)},
        poll_s=0.05,
        log=lambda s: None,
    )
    try:
        assert report.status == "applied", report.to_dict()
        assert call(server.url, "/readyz")[1]["batch_size"] == 2
        assert target.not_ready(spec, {"echo": StageConfig("slow", 2, 1, 1)}) == []
    finally:
        call(server.url, "/config", {"batch_size": 4})


@pytest.mark.parametrize(
    "after",
    [StageConfig("slow", 4, 1, 2), StageConfig("broken", 4, 1, 1)],
    ids=["scale-out", "switch"],
)
def test_a_step_a_fixed_service_cannot_take_is_refused_and_nothing_changes(
    server: Server, spec: PipelineSpec, after: StageConfig
) -> None:
    target = target_for(server)
    kind = "scale_out" if after.replicas > 1 else "switch"
    with pytest.raises(TargetError, match="fixed replica per stage"):
        target.apply_step(spec, Step(kind, "echo", RUNNING, after))
    assert target.read(spec) == {"echo": RUNNING}
    assert "helm" in ELSEWHERE


def test_the_environment_must_say_where_each_stage_is() -> None:
    assert target_from_environment({"IPA_STAGE_URL_TEMPLATE": "http://{name}:8000"}).url_template
    with pytest.raises(ValueError, match="IPA_STAGE_URL_TEMPLATE must say where each stage is"):
        target_from_environment({"IPA_STAGE_URL_TEMPLATE": "http://one-server:8000"})


def test_auto_picks_the_stage_servers_when_the_template_is_set(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    environ = {"IPA_STAGE_URL_TEMPLATE": "http://{name}:8000"}
    chosen = make_target("auto", settings, lambda: False, environ)
    assert isinstance(chosen, StageServersTarget)
    assert chosen.name == "stage servers at http://{name}:8000"
    assert not isinstance(make_target("auto", settings, lambda: False, {}), StageServersTarget)
    with pytest.raises(ValueError, match="IPA_STAGE_URL_TEMPLATE"):
        make_target("stage-servers", settings, lambda: False, {})
