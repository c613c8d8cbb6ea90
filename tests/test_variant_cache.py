"""The variant cache: build once, find again, rebuild when the recipe changes, never leave half a build."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ipa_tasks.accuracy import Configuration, MeasuredAccuracyTable
from ipa_tasks.demo_pipelines import BuiltVariant, Log
from ipa_tasks.variant_cache import BUILD_RECORD, cached_build, demo_pipeline, ensure_built, variant_directory


@dataclass
class Constant:
    value: int

    def predict(self, items: Sequence[Any]) -> list[Any]:
        return [self.value] * len(items)

    def held_out(self) -> tuple[Sequence[Any], Sequence[Any]]:
        return [0, 1, 2, 3], [self.value, self.value, 0, 0]


@dataclass
class ToyPipeline:
    """A demo pipeline whose 'model' is a constant written to a file; it counts its builds."""

    name: str = "toy"
    recipe_version: str = "1"
    builds: list[str] = field(default_factory=list)
    fail: bool = False

    def build_variant(self, stage: str, variant: str, directory: Path, log: Log) -> BuiltVariant:
        self.builds.append(variant)
        (directory / "model.txt").write_text(variant[-1])
        if self.fail:
            raise RuntimeError("training diverged")
        log(f"built {variant}")
        return BuiltVariant(self.name, stage, variant, directory, 0.5, 0.0, 0.001, {"constant": variant[-1]})

    def load_variant(self, stage: str, variant: str, directory: Path) -> Constant:
        return Constant(int((directory / "model.txt").read_text()))

    def end_to_end_accuracy(
        self, configurations: Sequence[Configuration], directories: dict, log: Log
    ) -> MeasuredAccuracyTable:
        raise NotImplementedError


def test_build_once_then_found_in_the_cache(tmp_path: Path):
    pipeline, lines = ToyPipeline(), []
    built, fresh = ensure_built(tmp_path, pipeline, "s", "v1", lines.append)
    again, fresh_again = ensure_built(tmp_path, pipeline, "s", "v1", lines.append)
    assert (fresh, fresh_again) == (True, False)
    assert pipeline.builds == ["v1"]
    assert built.directory == again.directory == variant_directory(tmp_path, "toy", "s", "v1")
    assert again.params == {"constant": "1"} and again.accuracy == 0.5
    record = json.loads((built.directory / BUILD_RECORD).read_text())
    assert record["recipe_version"] == "1" and record["build_seconds"] >= 0
    assert any("cached" in line for line in lines)


def test_a_new_recipe_or_rebuild_builds_again(tmp_path: Path):
    pipeline = ToyPipeline()
    ensure_built(tmp_path, pipeline, "s", "v1", print)
    ensure_built(tmp_path, pipeline, "s", "v1", print, rebuild=True)
    pipeline.recipe_version = "2"
    assert cached_build(tmp_path, pipeline, "s", "v1") is None
    ensure_built(tmp_path, pipeline, "s", "v1", print)
    assert pipeline.builds == ["v1", "v1", "v1"]


def test_a_failed_build_leaves_nothing_that_looks_built(tmp_path: Path):
    pipeline = ToyPipeline()
    ensure_built(tmp_path, pipeline, "s", "v1", print)
    pipeline.fail = True
    with pytest.raises(RuntimeError, match="diverged"):
        ensure_built(tmp_path, pipeline, "s", "v1", print, rebuild=True)
    # The previous good build stays, and no temporary folder is left behind.
    assert cached_build(tmp_path, pipeline, "s", "v1") is not None
    assert sorted(p.name for p in (tmp_path / "toy" / "s").iterdir()) == ["v1"]
    with pytest.raises(RuntimeError):
        ensure_built(tmp_path, pipeline, "s", "v2", print)
    assert cached_build(tmp_path, pipeline, "s", "v2") is None


def test_unknown_demo_pipeline_names_the_known_ones():
    with pytest.raises(KeyError, match="digit-strips, language-routing"):
        demo_pipeline("video")


def test_a_copied_cache_is_found_where_it_now_is(tmp_path: Path):
    import shutil

    pipeline = ToyPipeline()
    ensure_built(tmp_path / "a", pipeline, "s", "v1", print)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "a")
    found = cached_build(tmp_path / "b", pipeline, "s", "v1")
    assert found is not None and found.directory == tmp_path / "b" / "toy" / "s" / "v1"
    assert pipeline.load_variant("s", "v1", found.directory).value == 1
