"""Registering built variants in the MLflow model registry: one version per build, with its accuracy."""

from __future__ import annotations

from pathlib import Path

import pytest

from ipa_tasks.model_registry import BUILD_KIND, register_variant, registered_versions
from ipa_tasks.tracking import default_tracking_uri
from ipa_tasks.variant_cache import ensure_built
from tests.test_variant_cache import ToyPipeline


@pytest.fixture
def uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    return default_tracking_uri(tmp_path / "mlflow")


def test_a_build_is_registered_once_with_its_accuracy_and_files(tmp_path: Path, uri: str):
    from mlflow import MlflowClient

    pipeline = ToyPipeline()
    built, _ = ensure_built(tmp_path / "cache", pipeline, "s", "v1", print)
    first = register_variant(uri, built)
    second = register_variant(uri, built)
    assert (first.name, first.version, first.newly_registered) == ("toy.v1", "1", True)
    assert (second.version, second.run_id, second.newly_registered) == ("1", first.run_id, False)

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["ipa.kind"] == BUILD_KIND
    assert run.data.metrics["accuracy"] == 0.5
    assert run.data.params["constant"] == "1"
    files = {f.path for f in client.list_artifacts(first.run_id, "variant")}
    assert files == {"variant/model.txt", "variant/build.json"}
    version = client.get_model_version("toy.v1", "1")
    assert version.tags["ipa.accuracy"] == "0.500000"


def test_a_rebuild_becomes_a_new_version(tmp_path: Path, uri: str):
    pipeline = ToyPipeline()
    built, _ = ensure_built(tmp_path / "cache", pipeline, "s", "v1", print)
    register_variant(uri, built)
    rebuilt, _ = ensure_built(tmp_path / "cache", pipeline, "s", "v1", print, rebuild=True)
    assert register_variant(uri, rebuilt).version == "2"
    versions = registered_versions(uri, "toy", "v1")
    assert [v["version"] for v in versions] == ["1", "2"]
    assert all(v["source"].endswith("/variant") for v in versions)
