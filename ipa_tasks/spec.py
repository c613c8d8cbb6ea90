"""Pipeline specs: the declarative YAML that says what a pipeline is and what the optimizer may choose.

A spec names the ordered stages, each stage's model variants (and how to load them), the candidate batch
sizes, cores per replica and replica bounds, the end-to-end latency SLA and the objective weights. It is
validated on load; every error names the file and the field (``video.yaml: stages[1].batch_sizes[0]: ...``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

LatencyQuantile = Literal["p50", "p95", "p99"]
AccuracyMethod = Literal["product", "sum", "normalized_sum"]
PositiveInt = Annotated[int, Field(gt=0)]


class SpecError(ValueError):
    """A spec file is unreadable or invalid. The message names the file and each offending field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSource(_Strict):
    """How a variant is loaded. ``reference`` marks a published model we do not run here (IPA's pipelines)."""

    kind: Literal["reference", "python", "mlflow"]
    uri: str = Field(min_length=1)


class VariantSpec(_Strict):
    name: str = Field(min_length=1)
    model: ModelSource
    accuracy: float | None = Field(default=None, ge=0.0, le=1.0)
    accuracy_metric: str | None = None


class ReplicaBounds(_Strict):
    min: PositiveInt = 1
    max: PositiveInt = 100


class StageSpec(_Strict):
    name: str = Field(min_length=1)
    variants: list[VariantSpec] = Field(min_length=1)
    batch_sizes: list[PositiveInt] = Field(default_factory=lambda: [1], min_length=1)
    cores: list[PositiveInt] = Field(default_factory=lambda: [1], min_length=1)
    replicas: ReplicaBounds = Field(default_factory=ReplicaBounds)
    load_factor: float = Field(default=1.0, gt=0.0)
    """Requests this stage receives per pipeline request: a detector that emits three crops per image
    gives the classifier after it 3.0. The optimizer sizes the stage for ``load_factor`` x the load."""

    def variant(self, name: str) -> VariantSpec:
        for variant in self.variants:
            if variant.name == name:
                return variant
        raise KeyError(f"stage {self.name!r} has no variant {name!r}")


class ObjectiveWeights(_Strict):
    """Weights of ``accuracy_weight * accuracy - cost_weight * cores - batch_weight * sum(batch)
    - change_penalty * (stages whose variant or cores change)``."""

    accuracy_weight: float = Field(default=1.0, ge=0.0)
    cost_weight: float = Field(default=0.5, ge=0.0)
    batch_weight: float = Field(default=1e-6, ge=0.0)
    change_penalty: float = Field(default=0.0, ge=0.0)


class BaselineSettings(_Strict):
    """Pinned values the baseline policies use (``reference/ipa.md`` section 1.9).

    ``fa2_low``/``fa2_high`` pin a variant per stage (default: least/most accurate variant);
    ``rim_replicas`` pins the replica count per stage (no default: RIM needs it stated).
    """

    fa2_low: dict[str, str] = Field(default_factory=dict)
    fa2_high: dict[str, str] = Field(default_factory=dict)
    rim_replicas: dict[str, PositiveInt] = Field(default_factory=dict)


class PipelineSpec(_Strict):
    name: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9-]*$")
    description: str = ""
    sla_s: float = Field(gt=0.0)
    latency_quantile: LatencyQuantile = "p99"
    accuracy_method: AccuracyMethod = "product"
    objective: ObjectiveWeights = Field(default_factory=ObjectiveWeights)
    max_total_cores: PositiveInt | None = None
    stages: list[StageSpec] = Field(min_length=1)
    baselines: BaselineSettings = Field(default_factory=BaselineSettings)
    profiles: str | None = None
    """Default profile table, relative to the spec file."""

    source_path: Path | None = Field(default=None, exclude=True)

    @property
    def stage_names(self) -> list[str]:
        return [stage.name for stage in self.stages]

    def stage(self, name: str) -> StageSpec:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"pipeline {self.name!r} has no stage {name!r}")

    def select_variants(
        self, stages: Sequence[str] | None = None, variants: Sequence[str] | None = None
    ) -> list[tuple[str, str]]:
        """(stage, variant) pairs in pipeline order, limited to the named stages and variants (None or empty:
        all). A name the spec does not have is a KeyError that names it."""
        unknown_stages = sorted(set(stages or ()) - set(self.stage_names))
        if unknown_stages:
            raise KeyError(f"pipeline {self.name!r} has no stage(s) {', '.join(unknown_stages)}")
        chosen = [s for s in self.stages if not stages or s.name in stages]
        unknown_variants = sorted(set(variants or ()) - {v.name for s in chosen for v in s.variants})
        if unknown_variants:
            raise KeyError(
                f"pipeline {self.name!r} has no variant(s) {', '.join(unknown_variants)} "
                f"in stage(s) {', '.join(s.name for s in chosen)}"
            )
        return [(s.name, v.name) for s in chosen for v in s.variants if not variants or v.name in variants]

    def default_profiles_path(self) -> Path | None:
        if self.profiles is None:
            return None
        base = self.source_path.parent if self.source_path else Path.cwd()
        return base / self.profiles


def _field_path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"


def _semantic_errors(spec: PipelineSpec) -> Iterator[tuple[str, str]]:
    """Cross-field rules a schema cannot express, as (field path, message)."""
    seen_stages: set[str] = set()
    for i, stage in enumerate(spec.stages):
        if stage.name in seen_stages:
            yield f"stages[{i}].name", f"duplicate stage name {stage.name!r}"
        seen_stages.add(stage.name)
        seen_variants: set[str] = set()
        for j, variant in enumerate(stage.variants):
            if variant.name in seen_variants:
                yield f"stages[{i}].variants[{j}].name", f"duplicate variant name {variant.name!r}"
            seen_variants.add(variant.name)
        for key in ("batch_sizes", "cores"):
            values = getattr(stage, key)
            if len(set(values)) != len(values):
                yield f"stages[{i}].{key}", f"values must be unique, got {values}"
        if stage.replicas.min > stage.replicas.max:
            yield (
                f"stages[{i}].replicas",
                f"min ({stage.replicas.min}) is larger than max ({stage.replicas.max})",
            )
    stages = {stage.name: stage for stage in spec.stages}
    for policy in ("fa2_low", "fa2_high"):
        for stage_name, variant_name in getattr(spec.baselines, policy).items():
            field = f"baselines.{policy}.{stage_name}"
            if stage_name not in stages:
                yield field, f"unknown stage {stage_name!r} (stages: {', '.join(stages)})"
            elif variant_name not in {v.name for v in stages[stage_name].variants}:
                yield field, f"stage {stage_name!r} has no variant {variant_name!r}"
    for stage_name, replicas in spec.baselines.rim_replicas.items():
        field = f"baselines.rim_replicas.{stage_name}"
        if stage_name not in stages:
            yield field, f"unknown stage {stage_name!r} (stages: {', '.join(stages)})"
        elif not stages[stage_name].replicas.min <= replicas <= stages[stage_name].replicas.max:
            yield field, f"{replicas} is outside the stage's replica bounds"
    if spec.accuracy_method == "product":
        for i, stage in enumerate(spec.stages):
            for j, variant in enumerate(stage.variants):
                if variant.accuracy is None:
                    continue
                if variant.accuracy <= 0.0:
                    yield (
                        f"stages[{i}].variants[{j}].accuracy",
                        "must be > 0 when accuracy_method is 'product'",
                    )


def parse_spec(data: Any, source: str | Path = "<spec>") -> PipelineSpec:
    """Validate an already-parsed YAML document; errors name ``source`` and the field."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: (top level): expected a mapping, got {type(data).__name__}")
    try:
        spec = PipelineSpec.model_validate(data)
    except ValidationError as exc:
        lines = [f"{source}: {_field_path(err['loc'])}: {err['msg']}" for err in exc.errors()]
        raise SpecError("\n".join(lines)) from None
    problems = [f"{source}: {field}: {message}" for field, message in _semantic_errors(spec)]
    if problems:
        raise SpecError("\n".join(problems))
    if isinstance(source, Path):
        spec = spec.model_copy(update={"source_path": source.resolve()})
    return spec


def load_spec(path: str | Path) -> PipelineSpec:
    """Read and validate a spec file. Raises :class:`SpecError` naming the file and field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(unknown position)"
        raise SpecError(f"{path}: {where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    return parse_spec(data, path)


def shipped_specs_dir() -> Path:
    """The folder of specs that ship with the package."""
    return Path(str(resources.files("ipa_tasks") / "pipelines"))


def shipped_spec_paths() -> list[Path]:
    return sorted(shipped_specs_dir().glob("*.yaml"))


def resolve_spec_path(name_or_path: str | Path) -> Path:
    """Accept a path, or the name of a shipped pipeline (``video``)."""
    path = Path(name_or_path)
    if path.exists() or path.suffix in {".yaml", ".yml"}:
        return path
    shipped = shipped_specs_dir() / f"{name_or_path}.yaml"
    if shipped.exists():
        return shipped
    names = ", ".join(p.stem for p in shipped_spec_paths())
    raise SpecError(f"{name_or_path}: no such spec file, and no shipped pipeline of that name ({names})")
