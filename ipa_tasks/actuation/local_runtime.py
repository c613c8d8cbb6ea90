"""The local target: what runs on this machine, changed through the local serving runtime's admin API.

The runtime (``python -m ipa_tasks.serving.runtime``, :mod:`ipa_tasks.serving.runtime`) is one long-running
process that owns the routers and stage servers, because an Airflow task is too short-lived to own them.
This target is its client: it finds the admin API in ``<IPA_HOME>/serving/runtime.json`` (re-read on every
call, so a restarted runtime is found again) and speaks plain HTTP with timeouts (stdlib only). Each step
is one ``PUT`` of the stage's new configuration; the runtime carries it out without losing a request and
answers only when it is done (or has failed and left the stage as it was).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ipa_tasks.actuation.config import PipelineConfig, StageConfig, Step, step_problem
from ipa_tasks.actuation.json_http import ConnectionRefused, call_json
from ipa_tasks.actuation.target import TargetError
from ipa_tasks.serving.locations import runtime_file
from ipa_tasks.spec import PipelineSpec

READ_TIMEOUT_S = 10.0
CHANGE_TIMEOUT_S = 600.0
"""A change waits for new replicas (up to 120 s each), a drain (30 s) and stops (15 s): generous."""
START_HINT = "start it with python -m ipa_tasks.serving.runtime --spec <pipeline spec> [--home <IPA_HOME>]"


class LocalRuntimeTarget:
    """Reads and changes what the local serving runtime runs (see the module docstring)."""

    def __init__(self, home: Path, change_timeout_s: float = CHANGE_TIMEOUT_S) -> None:
        self.home = Path(home)
        self.change_timeout_s = change_timeout_s
        self.name = f"local runtime at {self._url_or_none() or f'(not running; {runtime_file(self.home)})'}"

    # --- the Target protocol ---

    def read(self, spec: PipelineSpec) -> PipelineConfig:
        stages = self._pipeline(spec)["stages"]
        try:
            return {stage: StageConfig.from_dict(state) for stage, state in stages.items()}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise TargetError(f"{self.name}: unexpected answer for pipeline {spec.name}: {exc}") from None

    def apply_step(self, spec: PipelineSpec, step: Step) -> None:
        problem = step_problem(spec, step)
        if problem:
            raise TargetError(problem)
        after = step.after
        body = {"variant": after.variant, "batch_size": after.batch_size, "cores": after.cores}
        body["replicas"] = after.replicas
        self._call("PUT", self._stage_path(spec, step.stage), body, self.change_timeout_s)

    def remove(self, spec: PipelineSpec, stage: str) -> None:
        self._call("DELETE", self._stage_path(spec, stage), None, self.change_timeout_s)

    def not_ready(self, spec: PipelineSpec, config: Mapping[str, StageConfig]) -> list[str]:
        stages = self._pipeline(spec)["stages"]
        waiting = []
        for stage, want in config.items():
            state = stages.get(stage)
            if state is None:
                waiting.append(f"stage {stage}: not running")
            elif int(state.get("ready", 0)) < want.replicas:
                waiting.append(f"stage {stage}: {state.get('ready', 0)} of {want.replicas} replica(s) ready")
        return waiting

    # --- HTTP ---

    def _pipeline(self, spec: PipelineSpec) -> dict[str, Any]:
        answer = self._call("GET", f"/pipelines/{quote(spec.name)}", None, READ_TIMEOUT_S)
        if not isinstance(answer, dict) or not isinstance(answer.get("stages"), dict):
            raise TargetError(f"{self.name}: unexpected answer for pipeline {spec.name}: {answer!r:.200}")
        return answer

    @staticmethod
    def _stage_path(spec: PipelineSpec, stage: str) -> str:
        return f"/pipelines/{quote(spec.name)}/stages/{quote(stage)}"

    def _url_or_none(self) -> str:
        try:
            info = json.loads(runtime_file(self.home).read_text(encoding="utf-8"))
            return str(info["url"]).rstrip("/")
        except (OSError, ValueError, KeyError, TypeError):
            return ""

    def _url(self) -> str:
        url = self._url_or_none()
        if not url:
            raise TargetError(
                f"the local runtime is not running (no {runtime_file(self.home)}); {START_HINT}"
            )
        self.name = f"local runtime at {url}"
        return url

    def _call(self, method: str, path: str, body: Any, timeout_s: float) -> Any:
        url = self._url()
        try:
            return call_json(method, url + path, body, timeout_s)
        except ConnectionRefused:
            raise TargetError(
                f"the local runtime is not running ({url} refuses connections; {runtime_file(self.home)} "
                f"is stale); {START_HINT}"
            ) from None
