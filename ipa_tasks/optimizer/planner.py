"""Decide a plan for one load: options -> pruning -> MILP -> solver (with fallback) -> plan.

:class:`Planner` holds what does not change between decisions (the spec and the completed profile), so
each call of :meth:`Planner.plan` pays only for what the adaptation loop must redo: the options at the new
load, the model build and the solve.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ipa_tasks.accuracy import combined_score
from ipa_tasks.latency_model import complete_profile
from ipa_tasks.optimizer.bounds import Incumbent, coordinate_ascent, feasible_plan, prune_by_bound
from ipa_tasks.optimizer.choices import SOLVERS, SolverName
from ipa_tasks.optimizer.degraded import DegradedChoice, fastest_latency_s, highest_throughput_choice
from ipa_tasks.optimizer.formulation import build_milp
from ipa_tasks.optimizer.options import (
    FlatPoints,
    StageOptions,
    StagePoints,
    expand_options,
    known_accuracies,
    prune_dominated,
    stage_points,
)
from ipa_tasks.optimizer.plan import Evaluation, ObjectiveTerms, Plan, StagePlan
from ipa_tasks.optimizer.policies import restriction_for
from ipa_tasks.optimizer.queueing import batch_formation_delay, queue_wait
from ipa_tasks.optimizer.solvers import (
    SolverResult,
    SolverUnavailable,
    solve_brute_force,
    solve_gurobi,
    solve_highs,
)
from ipa_tasks.profiles import ProfileError, profile_for_pipeline, read_profile
from ipa_tasks.spec import PipelineSpec, load_spec

log = logging.getLogger(__name__)

DEFAULT_TIME_LIMIT_S = 5.0
DOMINANCE_PRUNING_ABOVE = 60
"""Below this many options the MILP solves faster than dominance pruning runs."""


@dataclass
class Planner:
    spec: PipelineSpec
    profile: pd.DataFrame
    """The pipeline's profile; completed with fitted batch sizes on construction."""
    _points: dict[str, FlatPoints] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        rows = profile_for_pipeline(self.profile, self.spec.name)
        sources = set(rows["source"])
        self._profile_notes: tuple[str, ...] = ()
        if "synthetic" in sources:
            share = "all" if sources == {"synthetic"} else "some"
            self._profile_notes = (f"{share} profile rows are synthetic, not measurements",)
        self.profile = complete_profile(rows, {s.name: s.batch_sizes for s in self.spec.stages})
        self._accuracies = known_accuracies(self.spec, self.profile)

    @classmethod
    def from_files(cls, spec_path: str | Path, profile_path: str | Path | None = None) -> Planner:
        spec = load_spec(spec_path)
        path = profile_path or spec.default_profiles_path()
        if path is None:
            raise ProfileError(f"{spec_path}: the spec names no profile table; pass one explicitly")
        return cls(spec, read_profile(path))

    def points(self, policy: str) -> list[StagePoints]:
        return list(self._flat_points(policy).stages)

    def _flat_points(self, policy: str) -> FlatPoints:
        if policy not in self._points:
            restriction = restriction_for(policy, self.spec, self._accuracies)
            points = stage_points(self.spec, self.profile, self._accuracies, restriction)
            self._points[policy] = FlatPoints.of(points)
        return self._points[policy]

    def options(
        self, load_rps: float, policy: str = "ipa", current: Plan | None = None, prune: bool = True
    ) -> list[StageOptions]:
        """The options the MILP chooses from (pruned unless ``prune=False``)."""
        return self._prepare(load_rps, policy, current, prune)[0]

    def _prepare(
        self, load_rps: float, policy: str, current: Plan | None, prune: bool
    ) -> tuple[list[StageOptions], Incumbent | None]:
        """The options, and the feasible plan found while pruning them (None without pruning)."""
        spec, points = self.spec, self._flat_points(policy)
        running = current.running() if current else None
        allowed, incumbent, fewest = None, None, []
        if prune:
            # A plan from fewest-replica options alone is feasible for the whole problem; every option of a
            # point costs at least its fewest-replica option, so points that cannot beat that plan go
            # before their replica counts are enumerated. Points too slow at their fewest replicas stay in
            # this bound (more replicas may make them fast enough); the incumbent search checks the SLA.
            fewest = expand_options(spec, points, load_rps, running, fewest_only=True, reachable_only=False)
            incumbent = feasible_plan(
                fewest, spec.objective, spec.accuracy_method, spec.sla_s, spec.max_total_cores
            )
            if incumbent is not None:
                kept = prune_by_bound(
                    fewest, spec.objective, spec.accuracy_method, spec.sla_s, incumbent, latency_floor=True
                )
                allowed = points.mask([o.point for o in kept])
        options = expand_options(spec, points, load_rps, running, allowed=allowed)
        if not prune:
            return options, None
        incumbent = self._carry_over(options, fewest, incumbent) if incumbent else None
        if incumbent is None:
            incumbent = feasible_plan(
                options, spec.objective, spec.accuracy_method, spec.sla_s, spec.max_total_cores
            )
        if incumbent is None:
            return options, None
        # Pruning renumbers options; the incumbent is kept by identity and found again afterwards.
        identity = _options_of(options, incumbent)
        options = prune_by_bound(options, spec.objective, spec.accuracy_method, spec.sla_s, incumbent)
        if sum(len(o) for o in options) > DOMINANCE_PRUNING_ABOVE:
            options = prune_dominated(options, with_cores=spec.max_total_cores is not None)
        incumbent = _find(options, identity, incumbent)
        return options, incumbent

    def _check_current(self, current: Plan) -> None:
        if current.pipeline and current.pipeline != self.spec.name:
            raise ValueError(f"the current plan is for pipeline {current.pipeline!r}, not {self.spec.name!r}")
        unknown = [s.stage for s in current.stages if s.stage not in self.spec.stage_names]
        if unknown:
            raise ValueError(
                f"the current plan names stage(s) {unknown} that {self.spec.name!r} does not have"
            )

    def _carry_over(
        self, options: list[StageOptions], fewest: list[StageOptions], incumbent: Incumbent
    ) -> Incumbent | None:
        """The fewest-replica incumbent in the full option set, polished there; None if it is not there."""
        found = _find(options, _options_of(fewest, incumbent), incumbent)
        if found is None:
            return None
        spec = self.spec
        chosen = coordinate_ascent(
            options, found.chosen, spec.objective, spec.accuracy_method, spec.sla_s, spec.max_total_cores
        )
        return Incumbent(chosen, incumbent.latency_price)

    def plan(
        self,
        load_rps: float,
        policy: str = "ipa",
        current: Plan | None = None,
        solver: SolverName = "auto",
        time_limit_s: float = DEFAULT_TIME_LIMIT_S,
        prune: bool = True,
    ) -> Plan:
        if not math.isfinite(load_rps) or load_rps < 0:
            raise ValueError(f"load must be a finite number >= 0 requests/s, got {load_rps}")
        if solver not in SOLVERS:
            raise ValueError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
        if not time_limit_s > 0:
            raise ValueError(f"the solver time limit must be > 0 seconds, got {time_limit_s}")
        if current is not None:
            self._check_current(current)
        start = time.perf_counter()
        options, incumbent = self._prepare(load_rps, policy, current, prune)
        notes: list[str] = list(self._profile_notes)
        result: SolverResult | None = None
        build_time = 0.0
        if all(len(o) for o in options):
            if solver == "brute-force":
                build_time = time.perf_counter() - start
                result = solve_brute_force(
                    options,
                    self.spec.objective,
                    self.spec.accuracy_method,
                    self.spec.sla_s,
                    self.spec.max_total_cores,
                )
            else:
                model = build_milp(
                    options,
                    self.spec.objective,
                    self.spec.accuracy_method,
                    self.spec.sla_s,
                    self.spec.max_total_cores,
                )
                build_time = time.perf_counter() - start
                result = self._solve_milp(model, solver, time_limit_s, notes)
        else:
            build_time = time.perf_counter() - start
        if result is not None and result.chosen is None and incumbent is not None:
            # The solver ran out of time without a solution; the pruning's feasible plan is still safe.
            notes.append(
                f"{result.solver} found no solution within {time_limit_s:g} s; using the feasible plan found "
                "while pruning (meets the SLA, may not be optimal)"
            )
            log.warning(notes[-1])
            result = SolverResult(result.solver, "time_limit", tuple(incumbent.chosen), result.solve_time_s)
        if result is None or result.chosen is None:
            return self._degraded(load_rps, policy, current, notes, build_time, result)
        spec = self.spec
        chosen = coordinate_ascent(
            options,
            list(result.chosen),
            spec.objective,
            spec.accuracy_method,
            spec.sla_s,
            spec.max_total_cores,
        )
        return self._plan(
            policy,
            load_rps,
            [
                _stage_plan_from_option(o, i, self.spec.stage(o.stage).load_factor)
                for o, i in zip(options, chosen, strict=True)
            ],
            [float(o.score[i]) for o, i in zip(options, chosen, strict=True)],
            solver=result.solver,
            status=result.status,
            build_time_s=build_time,
            solve_time_s=result.solve_time_s,
            notes=tuple(notes),
        )

    def _plan(
        self, policy: str, load_rps: float, stages: list[StagePlan], scores: list[float], **details
    ) -> Plan:
        """A plan with its objective terms computed from exactly the stages it holds."""
        return Plan(
            pipeline=self.spec.name,
            policy=policy,
            load_rps=load_rps,
            sla_s=self.spec.sla_s,
            stages=tuple(stages),
            terms=self._terms(stages, scores),
            **details,
        )

    def _solve_milp(self, model, solver: str, time_limit_s: float, notes: list[str]) -> SolverResult:
        if solver in ("auto", "gurobi"):
            try:
                return solve_gurobi(model, time_limit_s)
            except SolverUnavailable as exc:
                if solver == "gurobi":
                    raise
                message = f"Gurobi unavailable, solved with HiGHS instead: {exc}"
                log.warning(message)
                notes.append(message)
        return solve_highs(model, time_limit_s)

    def _terms(self, stages: list[StagePlan], scores: list[float]) -> ObjectiveTerms:
        w = self.spec.objective
        accuracy = combined_score(scores, self.spec.accuracy_method)
        return ObjectiveTerms(
            accuracy=accuracy,
            accuracy_term=w.accuracy_weight * accuracy,
            cost_term=w.cost_weight * sum(s.cores_total for s in stages),
            batch_term=w.batch_weight * sum(s.batch_size for s in stages),
            change_term=w.change_penalty * sum(s.changed for s in stages),
        )

    def _degraded(
        self,
        load_rps: float,
        policy: str,
        current: Plan | None,
        notes: list[str],
        build_time: float,
        result: SolverResult | None,
    ) -> Plan:
        start = time.perf_counter()
        points = self.points(policy)
        choice = highest_throughput_choice(points, self.spec.max_total_cores)
        running = current.running() if current else {}
        stages = [
            self._stage_at(p, int(i), int(n), load_rps, running)
            for p, i, n in zip(points, choice.point, choice.replicas, strict=True)
        ]
        scores = [float(p.score[i]) for p, i in zip(points, choice.point, strict=True)]
        reason = self._degraded_reason(load_rps, points, choice, result)
        log.warning("degraded plan for %s at %.2f rps: %s", self.spec.name, load_rps, reason)
        return self._plan(
            policy,
            load_rps,
            stages,
            scores,
            solver=(result.solver if result else "none") + "+highest-throughput",
            status="degraded",
            degraded=True,
            reason=reason,
            build_time_s=build_time,
            solve_time_s=(result.solve_time_s if result else 0.0) + time.perf_counter() - start,
            notes=tuple(notes),
        )

    def _stage_at(
        self, p: StagePoints, i: int, replicas: int, load_rps: float, running: dict[str, tuple[str, int]]
    ) -> StagePlan:
        """Point ``i`` of a stage with ``replicas`` replicas at ``load_rps``, its latency by the queueing
        model (``inf`` when the replicas cannot carry the load)."""
        b = int(p.batch_size[i])
        variant = p.variant_names[p.variant[i]]
        model_latency = float(p.model_latency_s[i])
        stage_load = load_rps * p.load_factor
        batch_wait = float(batch_formation_delay(stage_load, b))
        wait = float(queue_wait(stage_load, b, p.throughput_rps[i], replicas, self.spec.latency_quantile))
        return StagePlan(
            stage=p.stage,
            variant=variant,
            batch_size=b,
            cores=int(p.cores[i]),
            replicas=replicas,
            latency_s=model_latency + batch_wait + wait,
            model_latency_s=model_latency,
            batch_wait_s=batch_wait,
            queue_wait_s=wait,
            throughput_rps=float(p.throughput_rps[i]),
            accuracy=float(p.accuracy[i]),
            changed=p.stage in running and running[p.stage] != (variant, int(p.cores[i])),
            load_factor=p.load_factor,
        )

    def evaluate(self, candidate: Plan, load_rps: float, current: Plan | None = None) -> Evaluation:
        """``candidate``'s stages (variant, batch size, cores, replicas; nothing else is read) judged as the
        optimizer judges its own: latency by the queueing model at ``load_rps``, the objective's terms, and
        every way it breaks the spec or the SLA, in words. For plans that did not come from the optimizer
        (an agent's, a hand-written one)."""
        if not math.isfinite(load_rps) or load_rps < 0:
            raise ValueError(f"load must be a finite number >= 0 requests/s, got {load_rps}")
        spec = self.spec
        wanted = {s.stage: s for s in candidate.stages}
        problems = [f"the spec has no stage {name!r}" for name in wanted if name not in spec.stage_names]
        running = current.running() if current else {}
        stages, scores = [], []
        for p in self.points("ipa"):
            choice = wanted.get(p.stage)
            if choice is None:
                problems.append(f"stage {p.stage}: the plan gives it no configuration")
                continue
            names = np.array(p.variant_names, dtype=object)[p.variant]
            match = np.flatnonzero(
                (names == choice.variant) & (p.batch_size == choice.batch_size) & (p.cores == choice.cores)
            )
            if len(match) == 0:
                problems.append(
                    f"stage {p.stage}: {choice.variant} at batch {choice.batch_size} with {choice.cores} "
                    "core(s) is not a profiled option the spec allows"
                )
                continue
            if not p.min_replicas <= choice.replicas <= p.max_replicas:
                problems.append(
                    f"stage {p.stage}: {choice.replicas} replicas is outside the spec's bounds "
                    f"{p.min_replicas}..{p.max_replicas}"
                )
            stage = self._stage_at(p, int(match[0]), choice.replicas, load_rps, running)
            if not math.isfinite(stage.latency_s):
                problems.append(
                    f"stage {p.stage}: {stage.replicas} replica(s) of {stage.throughput_rps:.1f} requests/s "
                    f"cannot carry its {load_rps * p.load_factor:.1f} requests/s"
                )
            stages.append(stage)
            scores.append(float(p.score[match[0]]))
        latency = sum(s.latency_s for s in stages)
        if len(stages) == len(spec.stages) and math.isfinite(latency) and latency > spec.sla_s + 1e-9:
            problems.append(
                f"end-to-end latency {latency * 1000:.1f} ms is over the SLA of {spec.sla_s * 1000:.1f} ms"
            )
        cores = sum(s.cores_total for s in stages)
        if spec.max_total_cores is not None and cores > spec.max_total_cores:
            problems.append(f"{cores} cores in all is over the spec's max_total_cores {spec.max_total_cores}")
        plan = self._plan(
            candidate.policy or "candidate",
            load_rps,
            stages,
            scores,
            solver="evaluated",
            status="infeasible" if problems else "feasible",
            reason="; ".join(problems),
        )
        if not stages:  # nothing to score: an empty product's accuracy of 1 would read as a perfect plan
            plan = replace(plan, terms=None)
        return Evaluation(plan, tuple(problems))

    def _degraded_reason(
        self, load_rps: float, points: list[StagePoints], choice: DegradedChoice, result: SolverResult | None
    ) -> str:
        spec = self.spec
        if load_rps >= choice.capacity_rps:
            budget = " within the core budget" if choice.core_budget_binds else ""
            return (
                f"load {load_rps:.2f} rps is more than the pipeline can carry{budget} "
                f"(highest throughput {choice.capacity_rps:.2f} rps, bottleneck stage {choice.bottleneck!r})"
            )
        fastest = fastest_latency_s(points, load_rps, spec.latency_quantile)
        if fastest > spec.sla_s:
            return (
                f"no configuration meets the SLA of {spec.sla_s:g} s at {load_rps:.2f} rps "
                f"(the fastest takes {fastest:.3f} s)"
            )
        if spec.max_total_cores is not None:
            return (
                f"no configuration meets the SLA of {spec.sla_s:g} s within the core budget of "
                f"{spec.max_total_cores} cores at {load_rps:.2f} rps"
            )
        if result is not None and result.status == "time_limit":
            return f"{result.solver} found no plan within its time limit at {load_rps:.2f} rps"
        return (
            f"no enumerated configuration meets the SLA of {spec.sla_s:g} s at {load_rps:.2f} rps "
            f"(with every stage at its most replicas the fastest would take {fastest:.3f} s)"
        )


def _stage_plan_from_option(options: StageOptions, i: int, load_factor: float) -> StagePlan:
    return StagePlan(
        load_factor=load_factor,
        stage=options.stage,
        variant=options.variant_names[int(options.variant[i])],
        batch_size=int(options.batch_size[i]),
        cores=int(options.cores[i]),
        replicas=int(options.replicas[i]),
        latency_s=float(options.latency_s[i]),
        model_latency_s=float(options.model_latency_s[i]),
        batch_wait_s=float(options.batch_wait_s[i]),
        queue_wait_s=float(options.queue_wait_s[i]),
        throughput_rps=float(options.throughput_rps[i]),
        accuracy=float(options.accuracy[i]),
        changed=bool(options.changed[i]),
    )


def _options_of(options: list[StageOptions], incumbent: Incumbent) -> list[tuple[int, int]]:
    """(point, replicas) of the incumbent's option in each stage: an identity that survives renumbering."""
    return [(int(o.point[i]), int(o.replicas[i])) for o, i in zip(options, incumbent.chosen, strict=True)]


def _find(
    options: list[StageOptions], chosen: list[tuple[int, int]], incumbent: Incumbent
) -> Incumbent | None:
    """The incumbent in a renumbered option set; None if pruning dropped one of its options (an exact tie)."""
    index = []
    for o, (point, replicas) in zip(options, chosen, strict=True):
        match = np.flatnonzero((o.point == point) & (o.replicas == replicas))
        if len(match) == 0:
            return None
        index.append(int(match[0]))
    return Incumbent(index, incumbent.latency_price)
