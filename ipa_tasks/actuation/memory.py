"""A target that keeps what each pipeline's stages run in memory, in this process.

For what runs nowhere: a benchmark's or a simulation's ticks, which plan against the previous plan and
"apply" it, and tests of the adaptation steps. It refuses the same steps the real targets refuse (a variant,
core count or replica count the spec does not offer), so a plan it accepts is one they would accept.
"""

from __future__ import annotations

from collections.abc import Mapping

from ipa_tasks.actuation.config import PipelineConfig, StageConfig, Step, step_problem
from ipa_tasks.actuation.target import TargetError
from ipa_tasks.spec import PipelineSpec


class InMemoryTarget:
    name = "in-memory target"

    def __init__(self, running: Mapping[str, PipelineConfig] | None = None) -> None:
        self.running: dict[str, dict[str, StageConfig]] = {p: dict(c) for p, c in (running or {}).items()}

    def read(self, spec: PipelineSpec) -> PipelineConfig:
        return dict(self.running.get(spec.name, {}))

    def apply_step(self, spec: PipelineSpec, step: Step) -> None:
        problem = step_problem(spec, step)
        if problem:
            raise TargetError(problem)
        self.running.setdefault(spec.name, {})[step.stage] = step.after

    def remove(self, spec: PipelineSpec, stage: str) -> None:
        self.running.get(spec.name, {}).pop(stage, None)

    def not_ready(self, spec: PipelineSpec, config: Mapping[str, StageConfig]) -> list[str]:
        return []
