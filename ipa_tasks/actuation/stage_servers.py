"""The fixed-services target: stage servers that something else runs (docker-compose: one service per stage),
reached directly over HTTP.

Compose gives Airflow no API to start, stop or restart services (only the Docker socket, which would make
every task root on the host), so this target can change only what a stage server changes in place: its
batch size (``POST /config``, no restart). It reads what each stage runs from the server's ``GET /readyz``
(variant, batch size, threads = cores; one replica). A step that needs another variant, other cores or
more replicas is refused before anything is written, naming the way to get it (Kubernetes with the Helm
chart, or the local runtime); the loop records the refusal like any failed apply. In the Compose file the
loop runs as a dry run by default (``ipa_adapt_dry_run``), so its decisions are recorded and shown and
nothing is refused every tick.

Where a stage is: ``url_template`` (``IPA_STAGE_URL_TEMPLATE`` in the environment) with ``{pipeline}``,
``{stage}`` and ``{name}``, the stage's DNS-safe ``<pipeline>-<stage>`` (the Compose file's service names
and the chart's object names), e.g. ``http://{name}:8000``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ipa_tasks.actuation.config import PipelineConfig, StageConfig, Step, step_problem
from ipa_tasks.actuation.json_http import call_json
from ipa_tasks.actuation.manifests import stage_object_name
from ipa_tasks.actuation.target import TargetError
from ipa_tasks.spec import PipelineSpec

URL_TEMPLATE_VARIABLE = "IPA_STAGE_URL_TEMPLATE"
TIMEOUT_S = 5.0
ELSEWHERE = (
    "a Compose deployment runs one fixed replica per stage; variant, core and replica changes need the "
    "Kubernetes target (helm/, docs/deploy.md) or the local runtime (make serve)"
)


def target_from_environment(environ: Mapping[str, str]) -> StageServersTarget:
    """The target ``IPA_STAGE_URL_TEMPLATE`` describes; ValueError when it is missing or names no stage
    (every stage would be sent to one server)."""
    template = environ.get(URL_TEMPLATE_VARIABLE, "")
    if "{stage}" not in template and "{name}" not in template:
        raise ValueError(
            f"{URL_TEMPLATE_VARIABLE} must say where each stage is with {{name}} (<pipeline>-<stage>) or "
            f"{{stage}}, e.g. http://{{name}}:8000; got {template!r}"
        )
    return StageServersTarget(template)


class StageServersTarget:
    """Stage servers at fixed addresses (see the module docstring)."""

    def __init__(
        self, url_template: str, urls: Mapping[str, str] | None = None, timeout_s: float = TIMEOUT_S
    ) -> None:
        self.url_template = url_template
        self.urls = dict(urls or {})
        """Addresses by stage, where one is not where the template says (e.g. servers on other ports)."""
        self.timeout_s = timeout_s
        self.name = f"stage servers at {url_template}"

    def url(self, spec: PipelineSpec, stage: str) -> str:
        if stage in self.urls:
            return self.urls[stage].rstrip("/")
        # Service names are DNS labels: the same <pipeline>-<stage> name the Kubernetes objects get.
        name = stage_object_name(spec.name, stage)
        return self.url_template.format(pipeline=spec.name, stage=stage, name=name).rstrip("/")

    # --- the Target protocol ---

    def read(self, spec: PipelineSpec) -> PipelineConfig:
        running: dict[str, StageConfig] = {}
        for stage in spec.stage_names:
            state = self._ready_state(spec, stage)
            if state is None:
                continue  # not deployed (or not answering): absent, as a missing Deployment is
            try:
                running[stage] = StageConfig(
                    variant=str(state["variant"]),
                    batch_size=int(state["batch_size"]),
                    cores=int(state["threads"]),
                    replicas=1,
                )
            except (KeyError, TypeError, ValueError) as exc:
                where = self.url(spec, stage)
                raise TargetError(f"{where}/readyz: unexpected answer {state!r}: {exc}") from None
        return running

    def apply_step(self, spec: PipelineSpec, step: Step) -> None:
        problem = step_problem(spec, step)
        if problem:
            raise TargetError(problem)
        if step.kind != "batch" or step.before is None:
            raise TargetError(f"{step.describe()}: not done: {ELSEWHERE}")
        self._call("POST", f"{self.url(spec, step.stage)}/config", {"batch_size": step.after.batch_size})

    def remove(self, spec: PipelineSpec, stage: str) -> None:
        raise TargetError(f"stop {spec.name}/{stage}: not done: {ELSEWHERE}")

    def not_ready(self, spec: PipelineSpec, config: Mapping[str, StageConfig]) -> list[str]:
        lines = []
        for stage, wanted in config.items():
            state = self._ready_state(spec, stage)
            if state is None:
                lines.append(f"{stage}: {self.url(spec, stage)}/readyz does not answer 200")
            elif int(state.get("batch_size", -1)) != wanted.batch_size:
                lines.append(f"{stage}: batch size {state.get('batch_size')}, not yet {wanted.batch_size}")
        return lines

    # --- HTTP ---

    def _ready_state(self, spec: PipelineSpec, stage: str) -> dict[str, Any] | None:
        try:
            answer = self._call("GET", f"{self.url(spec, stage)}/readyz", None)
        except TargetError:
            return None
        return answer if isinstance(answer, dict) and answer.get("ready") else None

    def _call(self, method: str, url: str, body: Any) -> Any:
        return call_json(method, url, body, self.timeout_s)
