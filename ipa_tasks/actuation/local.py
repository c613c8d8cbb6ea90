"""The local target of the embedded default, interim: it records what each stage should run in a file.

Until the local serving runtime exists (issue 5), "applying" a plan locally means writing the configuration
to ``<IPA_HOME>/serving/<pipeline>/running.json``, which the runtime will read; nothing serves requests yet.
The file is written atomically, so a reader never sees half of it, and a failure leaves the previous file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from ipa_tasks.actuation.config import (
    PipelineConfig,
    StageConfig,
    Step,
    config_from_dict,
    config_to_dict,
    step_problem,
)
from ipa_tasks.actuation.target import TargetError
from ipa_tasks.atomic_files import atomic_write_text
from ipa_tasks.serving.locations import pipeline_dir
from ipa_tasks.spec import PipelineSpec


def running_file(home: Path, pipeline: str) -> Path:
    return pipeline_dir(home, pipeline) / "running.json"


class LocalFileTarget:
    """Records each stage's configuration in ``running.json`` (see the module docstring)."""

    def __init__(self, home: Path) -> None:
        self.home = Path(home)
        self.name = f"local file target under {self.home / 'serving'} (records plans; no serving runtime yet)"

    def read(self, spec: PipelineSpec) -> PipelineConfig:
        path = running_file(self.home, spec.name)
        if not path.exists():
            return {}
        try:
            return config_from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise TargetError(f"{path}: cannot read the running configuration: {exc}") from None

    def apply_step(self, spec: PipelineSpec, step: Step) -> None:
        problem = step_problem(spec, step)
        if problem:
            raise TargetError(problem)
        config = self.read(spec)
        config[step.stage] = step.after
        self._write(spec.name, config)

    def remove(self, spec: PipelineSpec, stage: str) -> None:
        config = self.read(spec)
        config.pop(stage, None)
        self._write(spec.name, config)

    def not_ready(self, spec: PipelineSpec, config: Mapping[str, StageConfig]) -> list[str]:
        return []

    def _write(self, pipeline: str, config: Mapping[str, StageConfig]) -> None:
        path = running_file(self.home, pipeline)
        try:
            atomic_write_text(path, json.dumps(config_to_dict(config), indent=2, sort_keys=True) + "\n")
        except OSError as exc:
            raise TargetError(f"{path}: cannot write the running configuration: {exc}") from None
