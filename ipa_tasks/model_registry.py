"""The MLflow model registry entry of every built demo variant.

Each build becomes a run (``ipa.kind = variant-build``: the variant's parameters, its held-out accuracy,
build time and size, and its files as artifacts under ``variant/``) and a version of the registered model
``<pipeline>.<variant>`` whose source is those artifacts, tagged with the accuracy. A build is registered
once: the version carries the SHA-256 of the build record, and registering the same build again returns the
existing version, so re-running the build command against the same store adds nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ipa_tasks.demo_pipelines import BuiltVariant, Log
from ipa_tasks.settings import Settings
from ipa_tasks.tracking import experiment_id_for, mlflow_client
from ipa_tasks.variant_cache import BUILD_RECORD, demo_pipeline, ensure_built

BUILD_KIND = "variant-build"
BUILD_EXPERIMENT = "ipa-variants"
_ARTIFACT_PATH = "variant"


@dataclass(frozen=True)
class RegisteredVariant:
    name: str
    version: str
    run_id: str
    newly_registered: bool


def registered_model_name(pipeline: str, variant: str) -> str:
    return f"{pipeline}.{variant}"


def build_fingerprint(built: BuiltVariant) -> str:
    """Identifies one build: rebuilding changes the record (its time and accuracy at least)."""
    return hashlib.sha256((built.directory / BUILD_RECORD).read_bytes()).hexdigest()


def register_variant(
    tracking_uri: str, built: BuiltVariant, *, experiment: str = BUILD_EXPERIMENT
) -> RegisteredVariant:
    """Log ``built`` as a run and a model version, unless this very build is registered already."""
    from mlflow.entities import Metric, Param
    from mlflow.exceptions import MlflowException

    client = mlflow_client(tracking_uri)
    name = registered_model_name(built.pipeline, built.variant)
    fingerprint = build_fingerprint(built)
    try:
        client.create_registered_model(
            name,
            tags={"ipa.pipeline": built.pipeline, "ipa.stage": built.stage, "ipa.variant": built.variant},
            description=f"Variant {built.variant} of stage {built.stage} of the {built.pipeline} pipeline.",
        )
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    for version in client.search_model_versions(f"name = '{name}'"):
        if version.tags.get("ipa.build_sha256") == fingerprint:
            return RegisteredVariant(name, str(version.version), version.run_id, newly_registered=False)

    run = client.create_run(
        experiment_id_for(client, experiment, tracking_uri),
        run_name=f"build {built.pipeline}/{built.variant}",
        tags={
            "ipa.kind": BUILD_KIND,
            "ipa.pipeline": built.pipeline,
            "ipa.stage": built.stage,
            "ipa.variant": built.variant,
        },
    )
    run_id = run.info.run_id
    try:
        params = {"stage": built.stage, "variant": built.variant, **built.params}
        metrics = {"accuracy": built.accuracy, "build_seconds": built.build_seconds, "size_mb": built.size_mb}
        client.log_batch(
            run_id,
            params=[Param(key, str(value)) for key, value in params.items()],
            metrics=[Metric(key, float(value), 0, 0) for key, value in metrics.items()],
        )
        client.log_artifacts(run_id, str(built.directory), _ARTIFACT_PATH)
        version = client.create_model_version(
            name,
            source=f"{run.info.artifact_uri}/{_ARTIFACT_PATH}",
            run_id=run_id,
            tags={"ipa.build_sha256": fingerprint, "ipa.accuracy": f"{built.accuracy:.6f}"},
            description=f"held-out accuracy {built.accuracy:.4f}; built in {built.build_seconds:.1f} s",
        )
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return RegisteredVariant(name, str(version.version), run_id, newly_registered=True)


def registered_versions(tracking_uri: str, pipeline: str, variant: str) -> list[dict[str, str]]:
    """Every registered version of one variant, oldest first: version, run id, accuracy tag, source."""
    client = mlflow_client(tracking_uri)
    versions = client.search_model_versions(f"name = '{registered_model_name(pipeline, variant)}'")
    return [
        {
            "version": str(v.version),
            "run_id": v.run_id,
            "accuracy": v.tags.get("ipa.accuracy", ""),
            "source": v.source,
        }
        for v in sorted(versions, key=lambda v: int(v.version))
    ]


def build_and_register(
    settings: Settings, pipeline: str, stage: str, variant: str, log: Log, *, rebuild: bool = False
) -> tuple[BuiltVariant, bool, RegisteredVariant]:
    """Build (or find) a demo variant in the settings' cache and register it in their MLflow store.

    Returns the build, whether it was built now, and its registry entry.
    """
    built, fresh = ensure_built(
        settings.variant_cache, demo_pipeline(pipeline), stage, variant, log, rebuild=rebuild
    )
    entry = register_variant(settings.tracking_uri, built)
    state = "registered" if entry.newly_registered else "already registered"
    log(f"{entry.name} version {entry.version} {state} (held-out accuracy {built.accuracy:.4f})")
    return built, fresh, entry
