"""What a stage runs (variant, batch size, cores, replicas) and the ordered steps from one configuration to
another.

A change is applied as a sequence of steps, each of which leaves every stage in a configuration that can
serve: first every stage that needs more replicas scales out (with the variant it runs now), then stages
switch variant or cores (a rolling restart), then batch sizes change, and last the stages that need fewer
replicas scale in. Capacity is therefore never below the smaller of the old and the new plan's while a
change lands, and a failure part-way leaves the pipeline over-provisioned rather than short.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from ipa_tasks.optimizer.plan import Plan
from ipa_tasks.spec import PipelineSpec

StepKind = Literal["create", "scale_out", "switch", "batch", "scale_in"]
STEP_ORDER: tuple[StepKind, ...] = ("create", "scale_out", "switch", "batch", "scale_in")


@dataclass(frozen=True)
class StageConfig:
    """What one stage runs: every replica serves ``variant`` with ``cores`` threads, batching up to
    ``batch_size`` requests."""

    variant: str
    batch_size: int
    cores: int
    replicas: int

    def describe(self) -> str:
        return f"{self.variant} batch {self.batch_size} x{self.replicas} ({self.cores} core(s) each)"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StageConfig:
        return cls(
            variant=str(data["variant"]),
            batch_size=int(data["batch_size"]),
            cores=int(data["cores"]),
            replicas=int(data["replicas"]),
        )


PipelineConfig = dict[str, StageConfig]
"""Stage name -> what it runs. A stage that runs nothing (not deployed) is absent."""


def config_of(plan: Plan) -> PipelineConfig:
    return {
        s.stage: StageConfig(variant=s.variant, batch_size=s.batch_size, cores=s.cores, replicas=s.replicas)
        for s in plan.stages
    }


def config_to_dict(config: Mapping[str, StageConfig]) -> dict[str, dict[str, Any]]:
    return {stage: asdict(c) for stage, c in config.items()}


def config_from_dict(data: Mapping[str, Mapping[str, Any]]) -> PipelineConfig:
    return {stage: StageConfig.from_dict(c) for stage, c in data.items()}


@dataclass(frozen=True)
class Step:
    """Bring ``stage`` from ``before`` (None: not deployed) to ``after``; one kind of change at a time."""

    kind: StepKind
    stage: str
    before: StageConfig | None
    after: StageConfig

    def describe(self) -> str:
        after = self.after
        if self.kind == "create" or self.before is None:
            return f"{self.stage}: start {after.describe()}"
        before = self.before
        if self.kind in ("scale_out", "scale_in"):
            verb = self.kind.replace("_", " ")
            return f"{self.stage}: {verb} {before.replicas} -> {after.replicas} replicas"
        if self.kind == "batch":
            return f"{self.stage}: batch size {before.batch_size} -> {after.batch_size}"
        return (
            f"{self.stage}: switch {before.variant} ({before.cores} core(s)) -> "
            f"{after.variant} ({after.cores} core(s)), batch {after.batch_size}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "stage": self.stage,
            "before": None if self.before is None else asdict(self.before),
            "after": asdict(self.after),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Step:
        before = data.get("before")
        return cls(
            kind=data["kind"],
            stage=str(data["stage"]),
            before=None if before is None else StageConfig.from_dict(before),
            after=StageConfig.from_dict(data["after"]),
        )


def step_problem(spec: PipelineSpec, step: Step) -> str:
    """Why a target must refuse ``step`` before writing anything ("" when it may go ahead): a stage or
    variant the spec does not have, a core count it does not offer, or replicas outside its bounds."""
    try:
        stage = spec.stage(step.stage)
        stage.variant(step.after.variant)
    except KeyError as exc:
        return f"refusing {step.describe()}: {exc.args[0]}"
    if step.after.cores not in stage.cores:
        return f"refusing {step.describe()}: stage {stage.name} offers {stage.cores} cores per replica"
    bounds = stage.replicas
    if not bounds.min <= step.after.replicas <= bounds.max:
        return (
            f"refusing {step.describe()}: {step.after.replicas} replicas is outside the spec's bounds "
            f"{bounds.min}..{bounds.max} for stage {stage.name}"
        )
    return ""


def plan_steps(current: Mapping[str, StageConfig], desired: Mapping[str, StageConfig]) -> list[Step]:
    """The steps from ``current`` to ``desired``, in the safe order (module docstring); empty when they
    are equal. Stages in ``current`` but not in ``desired`` are left alone: a plan always names every
    stage, and removing a stage is not the adaptation loop's business."""
    steps: dict[StepKind, list[Step]] = {kind: [] for kind in STEP_ORDER}
    for stage, want in desired.items():
        have = current.get(stage)
        if have is None:
            steps["create"].append(Step("create", stage, None, want))
            continue
        if have == want:
            continue
        state = have
        if want.replicas > state.replicas:
            state = _advance(steps, "scale_out", stage, state, replicas=want.replicas)
        if (want.variant, want.cores) != (state.variant, state.cores):
            # A restart picks up the new batch size too; a separate batch step would only repeat it.
            switched = {"variant": want.variant, "cores": want.cores, "batch_size": want.batch_size}
            state = _advance(steps, "switch", stage, state, **switched)
        if want.batch_size != state.batch_size:
            state = _advance(steps, "batch", stage, state, batch_size=want.batch_size)
        if want.replicas < state.replicas:
            state = _advance(steps, "scale_in", stage, state, replicas=want.replicas)
    return [step for kind in STEP_ORDER for step in steps[kind]]


def _advance(
    steps: dict[StepKind, list[Step]], kind: StepKind, stage: str, state: StageConfig, **changes: Any
) -> StageConfig:
    after = replace(state, **changes)
    steps[kind].append(Step(kind, stage, state, after))
    return after
