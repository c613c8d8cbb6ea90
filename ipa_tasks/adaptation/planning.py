"""The planner of a tick: the pipeline's spec with the profile the last profiling round published, or the
profile shipped with the spec when nothing is published yet."""

from __future__ import annotations

from pathlib import Path

from ipa_tasks.actuation.config import PipelineConfig
from ipa_tasks.optimizer.plan import Plan, StagePlan
from ipa_tasks.optimizer.planner import Planner
from ipa_tasks.profile_store import ProfileStore
from ipa_tasks.profiles import ProfileError, read_profile
from ipa_tasks.spec import PipelineSpec, load_spec


def planner_for(spec_path: str | Path, profile_store: Path) -> tuple[Planner, str]:
    """The planner and where its profile came from, in words."""
    spec = load_spec(spec_path)
    store = ProfileStore(profile_store)
    published = store.current(spec.name)
    if published is not None:
        return Planner(spec, published), f"published profile {store.current_path(spec.name)}"
    shipped = spec.default_profiles_path()
    if shipped is None:
        raise ProfileError(
            f"{spec_path}: no profile is published for {spec.name!r} and the spec names none; "
            "run ipa_profile first"
        )
    source = f"profile shipped with the spec ({shipped.name}), none published"
    return Planner(spec, read_profile(shipped)), source


def running_plan(spec: PipelineSpec, running: PipelineConfig) -> Plan | None:
    """What runs, as a plan the optimizer can charge the change penalty against (None if nothing runs)."""
    stages = tuple(
        StagePlan(stage=s, variant=c.variant, batch_size=c.batch_size, cores=c.cores, replicas=c.replicas)
        for s, c in running.items()
        if s in spec.stage_names
    )
    if not stages:
        return None
    return Plan(pipeline=spec.name, policy="running", load_rps=float("nan"), sla_s=spec.sla_s, stages=stages)
