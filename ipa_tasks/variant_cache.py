"""Building the demo pipelines' variants once and finding them again.

A built variant lives in ``<cache>/<pipeline>/<stage>/<variant>/`` with its model files and ``build.json``
(what :class:`~ipa_tasks.demo_pipelines.BuiltVariant` recorded, plus the pipeline's recipe version).
Building is skipped while ``build.json`` matches the current recipe version; a variant is built into a
temporary folder and renamed into place, so a killed build never leaves a half-written variant that looks
finished.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from ipa_tasks.demo_pipelines import BuiltVariant, DemoPipeline, Log
from ipa_tasks.settings import current_settings
from ipa_tasks.variants import LoadedVariant, VariantLoadError

DEMO_PIPELINE_MODULES = {
    "digit-strips": "ipa_tasks.demo_pipelines.digit_strips",
    "language-routing": "ipa_tasks.demo_pipelines.language_routing",
}
"""Spec name -> module whose ``PIPELINE`` is the :class:`DemoPipeline`. Imported on demand: torch and the
language identifiers are slow to import and DAG files must parse fast."""

BUILD_RECORD = "build.json"


def demo_pipeline(name: str) -> DemoPipeline:
    module = DEMO_PIPELINE_MODULES.get(name)
    if module is None:
        known = ", ".join(sorted(DEMO_PIPELINE_MODULES))
        raise KeyError(f"{name!r} is not a demo pipeline (known: {known})")
    return importlib.import_module(module).PIPELINE


def variant_directory(cache: Path, pipeline: str, stage: str, variant: str) -> Path:
    return cache / pipeline / stage / variant


def cached_build(cache: Path, pipeline: DemoPipeline, stage: str, variant: str) -> BuiltVariant | None:
    """The record of a finished build of the current recipe, or None."""
    directory = variant_directory(cache, pipeline.name, stage, variant)
    try:
        record = json.loads((directory / BUILD_RECORD).read_text())
    except (OSError, ValueError):
        return None
    if record.pop("recipe_version", None) != pipeline.recipe_version:
        return None
    # Where it is now, not where it was built: a cache can be copied or mounted elsewhere.
    record["directory"] = directory
    return BuiltVariant(**record)


def ensure_built(
    cache: Path, pipeline: DemoPipeline, stage: str, variant: str, log: Log, *, rebuild: bool = False
) -> tuple[BuiltVariant, bool]:
    """The built variant and whether it was built now (False: found in the cache)."""
    if not rebuild:
        found = cached_build(cache, pipeline, stage, variant)
        if found is not None:
            log(f"{pipeline.name}/{variant}: cached in {found.directory} (accuracy {found.accuracy:.3f})")
            return found, False
    final = variant_directory(cache, pipeline.name, stage, variant)
    final.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f".{variant}.", dir=final.parent))
    try:
        started = time.perf_counter()
        log(f"{pipeline.name}/{variant}: building")
        built = pipeline.build_variant(stage, variant, workdir, log)
        seconds = time.perf_counter() - started
        record = {**asdict(built), "directory": str(final), "build_seconds": seconds}
        record["recipe_version"] = pipeline.recipe_version
        (workdir / BUILD_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True))
        if final.exists():
            shutil.rmtree(final)
        os.replace(workdir, final)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    result = cached_build(cache, pipeline, stage, variant)
    assert result is not None
    log(f"{pipeline.name}/{variant}: built in {seconds:.1f} s, accuracy {result.accuracy:.3f}")
    return result, True


def load_cached(pipeline_name: str, stage: str, variant: str) -> LoadedVariant:
    """The factory behind every demo variant of a spec: load the built variant from this process's cache.

    A variant that was never built is an error that says how to build it, rather than a silent training
    run inside a profiling job, whose timings it would disturb.
    """
    cache = current_settings().variant_cache
    pipeline = demo_pipeline(pipeline_name)
    built = cached_build(cache, pipeline, stage, variant)
    if built is None:
        raise VariantLoadError(
            f"{pipeline_name}/{variant} is not built in {cache} (recipe {pipeline.recipe_version}); "
            f"run: ipa build-variants {pipeline_name} --variants {variant}"
        )
    return pipeline.load_variant(stage, variant, built.directory)
