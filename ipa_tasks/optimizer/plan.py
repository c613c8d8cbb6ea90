"""A plan: per stage the variant, batch size, cores and replicas, with the terms that justify it."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class StagePlan:
    stage: str
    variant: str
    batch_size: int
    cores: int
    replicas: int
    latency_s: float = math.nan
    """Model latency + batch formation + queueing, at the spec's latency quantile."""
    model_latency_s: float = math.nan
    batch_wait_s: float = math.nan
    queue_wait_s: float = math.nan
    throughput_rps: float = math.nan
    """One replica."""
    accuracy: float = math.nan
    changed: bool = False
    load_factor: float = 1.0
    """Requests this stage receives per pipeline request."""

    @property
    def capacity_rps(self) -> float:
        """Requests per second the stage's replicas serve (its own requests, not the pipeline's)."""
        return self.replicas * self.throughput_rps

    @property
    def cores_total(self) -> int:
        return self.cores * self.replicas


@dataclass(frozen=True)
class ObjectiveTerms:
    """``objective = accuracy_term - cost_term - batch_term - change_term``."""

    accuracy: float
    """Pipeline accuracy under the spec's method (the product of stage accuracies for ``product``)."""
    accuracy_term: float
    cost_term: float
    batch_term: float
    change_term: float

    @property
    def objective(self) -> float:
        return self.accuracy_term - self.cost_term - self.batch_term - self.change_term


@dataclass(frozen=True)
class Plan:
    pipeline: str
    policy: str
    load_rps: float
    sla_s: float
    stages: tuple[StagePlan, ...]
    terms: ObjectiveTerms | None = None
    solver: str = ""
    status: str = "optimal"
    """``optimal`` | ``time_limit`` (best found within the limit) | ``degraded`` (no plan meets the SLA)."""
    degraded: bool = False
    reason: str = ""
    build_time_s: float = 0.0
    solve_time_s: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)
    """What happened on the way, e.g. why the solver fell back."""

    @property
    def latency_s(self) -> float:
        return sum(s.latency_s for s in self.stages)

    @property
    def total_cores(self) -> int:
        return sum(s.cores_total for s in self.stages)

    @property
    def capacity_rps(self) -> float:
        """Pipeline requests per second: the slowest stage, each stage's capacity over its load factor."""
        return min(s.capacity_rps / s.load_factor for s in self.stages)

    @property
    def decision_time_s(self) -> float:
        return self.build_time_s + self.solve_time_s

    def stage(self, name: str) -> StagePlan:
        for s in self.stages:
            if s.stage == name:
                return s
        raise KeyError(name)

    def running(self) -> dict[str, tuple[str, int]]:
        """Stage -> (variant, cores), what a change penalty compares against."""
        return {s.stage: (s.variant, s.cores) for s in self.stages}

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["latency_s"] = self.latency_s
        data["total_cores"] = self.total_cores
        data["capacity_rps"] = self.capacity_rps
        if self.terms is not None:
            data["terms"]["objective"] = self.terms.objective
        return json_safe(data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<plan>") -> Plan:
        """Read a plan; only ``stages[*].{stage, variant, batch_size, cores, replicas}`` are required."""
        try:
            stages = tuple(
                StagePlan(
                    stage=str(s["stage"]),
                    variant=str(s["variant"]),
                    batch_size=int(s["batch_size"]),
                    cores=int(s["cores"]),
                    replicas=int(s["replicas"]),
                )
                for s in data["stages"]
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"{source}: a plan needs stages[*] with stage, variant, batch_size, cores, replicas ({exc})"
            ) from None
        return cls(
            pipeline=str(data.get("pipeline", "")),
            policy=str(data.get("policy", "")),
            load_rps=float(data.get("load_rps", math.nan)),
            sla_s=float(data.get("sla_s", math.nan)),
            stages=stages,
        )

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: cannot read a plan: {exc}") from None
        return cls.from_dict(data, str(path))


@dataclass(frozen=True)
class Evaluation:
    """A plan judged by :meth:`~ipa_tasks.optimizer.planner.Planner.evaluate`: its latencies and terms
    filled in, and every way it breaks the spec or the SLA (none: feasible)."""

    plan: Plan
    problems: tuple[str, ...] = ()

    @property
    def feasible(self) -> bool:
        return not self.problems


def json_safe(value: Any) -> Any:
    """JSON has no infinity or NaN; write them as null (in nested dicts, lists and tuples too)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
