"""What a policy would have done on a load window, in seconds instead of the window's length (``ipa replay``).

What: a load window (requests per second) is turned into arrivals (the load generator's exponential
spacing, seeded). Every ``interval_s`` the loop sees the last ``history_s`` seconds of arrivals, forecasts
the peak of the next ``horizon_s`` with the chosen forecaster (plus ``margin``; ``oracle`` is the true
peak), plans with the pipeline's profile and policy (charging the spec's change penalty against what runs),
and the plan lands after the time such a change takes: ``switch_s`` when a stage changes variant or cores
(new replicas must start), ``scale_out_s`` when it only adds replicas, at once for a batch size or fewer
replicas. The first plan, for the window's first minute, runs from the start. Then each stage is served as
:mod:`ipa_tasks.simulation.stage_queue` says, fed by the previous stage's finish times; a stage with a
``load_factor`` of L gets ``1 + Poisson(L - 1)`` items per request (L >= 1) or one with probability L.

Output: one row per request (arrival, latency, dropped or not, the interval whose plan it arrived under)
and one per interval (load, forecast, plan, cores, accuracy), and :func:`summarize`'s numbers: SLA
violations counted as late (served after the SLA) and as dropped (IPA counted only the dropped), p99 of the
served, mean plan accuracy over time (the spec's accuracy method), cost in core-seconds.

Why: IPA needed a cluster and 20 minutes per experiment; this answers "what would this policy have done
on that load" from the same profiles the optimizer plans with. It is deterministic for a seed. What it
leaves out: the serving hops' cost (profiles measure the model alone; see README, "The demo") and cores
shared between replicas.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ipa_tasks.actuation.config import PipelineConfig, StageConfig, config_of
from ipa_tasks.optimizer.plan import Plan, StagePlan
from ipa_tasks.optimizer.planner import Planner
from ipa_tasks.serving.load_generator import arrival_schedule
from ipa_tasks.settings import Settings
from ipa_tasks.simulation.service_times import ServiceTimes
from ipa_tasks.simulation.stage_queue import Epoch, serve_stage
from ipa_tasks.spec import PipelineSpec

Forecast = Callable[[np.ndarray, int], float]
"""(per-second arrivals so far, the tick's second) -> the load to plan for."""
Choose = Callable[[Planner, float, "Plan | None"], Plan]
"""(planner, the load to plan for, what runs or None) -> the plan: the loop's decision at one tick. The
default is the optimizer's plan for the options' policy; the agent policy gives its own
(:mod:`ipa_tasks.agent.policy`)."""


@dataclass(frozen=True)
class ReplayOptions:
    policy: str = "ipa"
    interval_s: int = 30
    history_s: int = 120
    horizon_s: int = 40
    switch_s: float = 10.0
    """From decision to new replicas serving, when a stage changes variant or cores."""
    scale_out_s: float = 5.0
    """From decision to added replicas serving."""
    max_wait_s: float = 0.005
    """The stage servers' batching wait (``--max-wait-ms`` 5)."""
    drop_limit_s: float = 10.0
    """As the router's ``--drop-limit-s``."""
    seed: int = 0
    solver: str = "auto"


@dataclass(frozen=True)
class Decision:
    at_s: float
    observed_peak_rps: float
    forecast_rps: float
    plan: Plan
    lands_s: dict[str, float]


@dataclass(frozen=True)
class ReplayResult:
    requests: pd.DataFrame
    intervals: pd.DataFrame
    summary: dict[str, Any]


def _lands(
    before: PipelineConfig, after: PipelineConfig, at: float, options: ReplayOptions
) -> dict[str, float]:
    lands = {}
    for stage, want in after.items():
        have = before.get(stage)
        if have is None or (have.variant, have.cores) != (want.variant, want.cores):
            lands[stage] = at + options.switch_s
        elif want.replicas > have.replicas:
            lands[stage] = at + options.scale_out_s
        else:
            lands[stage] = at
    return lands


def _running_plan(planner: Planner, config: PipelineConfig) -> Plan:
    from ipa_tasks.adaptation.planning import running_plan

    plan = running_plan(planner.spec, config)
    assert plan is not None
    return plan


def optimizer_choice(options: ReplayOptions) -> Choose:
    """The optimizer's plan for ``options.policy``, charging the change penalty against what runs."""

    def choose(planner: Planner, load: float, current: Plan | None) -> Plan:
        return planner.plan(load, options.policy, current=current, solver=options.solver)  # type: ignore[arg-type]

    return choose


def decide(
    planner: Planner,
    workload: np.ndarray,
    forecast: Forecast,
    options: ReplayOptions,
    choose: Choose | None = None,
) -> list[Decision]:
    """The loop's decisions over the window: the first plan at 0, then one every ``interval_s``."""
    choose = choose or optimizer_choice(options)
    first_load = float(max(1.0, np.max(workload[:60], initial=0) * 1.1))
    plan = choose(planner, first_load, None)
    decisions = [Decision(0.0, math.nan, first_load, plan, {s.stage: 0.0 for s in plan.stages})]
    running = config_of(plan)
    for tick in range(options.interval_s, len(workload), options.interval_s):
        history = workload[max(0, tick - options.history_s) : tick]
        load = float(forecast(workload, tick))
        plan = choose(planner, max(load, 0.0), _running_plan(planner, running))
        wanted = config_of(plan)
        decisions.append(
            Decision(float(tick), float(history.max()), load, plan, _lands(running, wanted, tick, options))
        )
        running = wanted
    return decisions


def _epochs(decisions: Sequence[Decision], stage: str, times: ServiceTimes) -> list[Epoch]:
    epochs: list[Epoch] = []
    for decision in decisions:
        chosen: StagePlan = next(s for s in decision.plan.stages if s.stage == stage)
        config = StageConfig(chosen.variant, chosen.batch_size, chosen.cores, chosen.replicas)
        if epochs and epochs[-1].config == config:
            continue
        start = decision.lands_s[stage]
        # A change decided later cannot land before an earlier one.
        start = max(start, epochs[-1].start_s) if epochs else start
        epochs.append(Epoch(start, config, times.curve(stage, chosen.variant, chosen.cores)))
    return epochs


def _items_per_request(load_factor: float, requests: int, rng: np.random.Generator) -> np.ndarray:
    if load_factor >= 1.0:
        return 1 + rng.poisson(load_factor - 1.0, requests) if load_factor > 1.0 else np.ones(requests, int)
    return (rng.random(requests) < load_factor).astype(int)


def simulate(
    planner: Planner,
    profile: pd.DataFrame,
    workload: Sequence[int] | np.ndarray,
    forecast: Forecast,
    options: ReplayOptions | None = None,
    choose: Choose | None = None,
) -> ReplayResult:
    """Decide, then serve every request of ``workload`` stage by stage (see the module docstring)."""
    options = options or ReplayOptions()
    counts = _counts(workload)
    return serve(
        planner, profile, counts, decide(planner, counts.astype(float), forecast, options, choose), options
    )


def replay_plan(
    planner: Planner, profile: pd.DataFrame, plan: Plan, workload: Sequence[int] | np.ndarray, seed: int = 0
) -> ReplayResult:
    """Serve ``workload`` with ``plan`` in place from the first second, never changed: what a candidate
    plan would do with the coming load."""
    counts = _counts(workload)
    decision = Decision(0.0, math.nan, plan.load_rps, plan, {s.stage: 0.0 for s in plan.stages})
    return serve(planner, profile, counts, [decision], ReplayOptions(seed=seed))


def _counts(workload: Sequence[int] | np.ndarray) -> np.ndarray:
    counts = np.asarray(workload, dtype=int)
    if counts.size == 0 or (counts < 0).any():
        raise ValueError("the workload must be a non-empty series of non-negative requests per second")
    return counts


def serve(
    planner: Planner,
    profile: pd.DataFrame,
    counts: np.ndarray,
    decisions: Sequence[Decision],
    options: ReplayOptions,
) -> ReplayResult:
    """Serve every request of ``counts`` (per second) stage by stage under ``decisions``."""
    rng = np.random.default_rng(options.seed)
    arrivals = arrival_schedule(counts, seed=options.seed)
    times = ServiceTimes(profile)
    ready = arrivals.copy()  # when each request is ready for the next stage
    alive = np.ones(len(arrivals), dtype=bool)
    deadline = arrivals + options.drop_limit_s
    for stage in planner.spec.stages:
        items = _items_per_request(stage.load_factor, len(arrivals), rng) * alive
        owner = np.repeat(np.arange(len(arrivals)), items)
        order = np.argsort(ready[owner], kind="stable")
        owner = owner[order]
        finish = serve_stage(
            ready[owner],
            deadline[owner],
            _epochs(decisions, stage.name, times),
            rng.standard_normal(max(1, len(owner))),
            options.max_wait_s,
        )
        dropped = np.zeros(len(arrivals), dtype=bool)
        np.logical_or.at(dropped, owner, np.isnan(finish))
        done = np.full(len(arrivals), -np.inf)
        np.maximum.at(done, owner, np.nan_to_num(finish, nan=-np.inf))
        alive &= ~dropped
        # A request with no item at this stage (a filter let nothing through) goes on at once.
        ready = np.where(items > 0, done, ready)
    requests = _request_table(arrivals, ready, alive, decisions, planner.spec.sla_s)
    intervals = _interval_table(decisions, counts, measured_accuracies(planner.spec))
    return ReplayResult(requests, intervals, summarize(requests, intervals, planner.spec.sla_s))


def _request_table(
    arrivals: np.ndarray,
    finished: np.ndarray,
    served: np.ndarray,
    decisions: Sequence[Decision],
    sla_s: float,
) -> pd.DataFrame:
    ticks = np.array([d.at_s for d in decisions])
    interval = np.searchsorted(ticks, arrivals, side="right") - 1
    latency = np.where(served, finished - arrivals, np.nan)
    return pd.DataFrame(
        {
            "arrival_s": arrivals,
            "latency_s": latency,
            "dropped": ~served,
            "late": served & (latency > sla_s),
            "interval": interval,
        }
    )


def measured_accuracies(spec: PipelineSpec) -> dict[tuple[str, ...], float]:
    """The pipeline's measured end-to-end accuracy per combination of variants (stage order), from the
    ``<spec>.end-to-end-accuracy.csv`` beside its spec (the demo pipelines'); empty when there is none."""
    if spec.source_path is None:
        return {}
    path = spec.source_path.with_name(f"{spec.source_path.stem}.end-to-end-accuracy.csv")
    if not path.exists():
        return {}
    table = pd.read_csv(path)
    stages = [s.name for s in spec.stages]
    return {tuple(str(row[s]) for s in stages): float(row["accuracy"]) for row in table.to_dict("records")}


def _configuration(plan: Plan) -> str:
    return "; ".join(f"{s.stage}={s.variant}/b{s.batch_size}/c{s.cores}/x{s.replicas}" for s in plan.stages)


def _interval_table(
    decisions: Sequence[Decision], counts: np.ndarray, measured: dict[tuple[str, ...], float]
) -> pd.DataFrame:
    rows = []
    for index, decision in enumerate(decisions):
        end = decisions[index + 1].at_s if index + 1 < len(decisions) else float(len(counts))
        window = counts[int(decision.at_s) : int(end)]
        previous = decisions[index - 1].plan if index else None
        rows.append(
            {
                "interval": index,
                "start_s": decision.at_s,
                "end_s": end,
                "load_rps": float(window.mean()) if window.size else math.nan,
                "observed_peak_rps": decision.observed_peak_rps,
                "forecast_rps": decision.forecast_rps,
                "configuration": _configuration(decision.plan),
                "changed": int(previous is not None and config_of(previous) != config_of(decision.plan)),
                "degraded": int(decision.plan.degraded),
                "accuracy": decision.plan.terms.accuracy if decision.plan.terms else math.nan,
                "measured_accuracy": measured.get(tuple(s.variant for s in decision.plan.stages), math.nan),
                "total_cores": decision.plan.total_cores,
                "planned_latency_s": decision.plan.latency_s,
            }
        )
    return pd.DataFrame(rows)


def summarize(requests: pd.DataFrame, intervals: pd.DataFrame, sla_s: float) -> dict[str, Any]:
    served = requests.loc[~requests["dropped"], "latency_s"].to_numpy(float)
    duration = (intervals["end_s"] - intervals["start_s"]).to_numpy(float)
    total = float(duration.sum())
    count = len(requests)
    dropped = int(requests["dropped"].sum())
    late = int(requests["late"].sum())
    return {
        "requests": count,
        "served": int(served.size),
        "dropped": dropped,
        "late": late,
        "sla_violations": late + dropped,
        "violation_share": (late + dropped) / count if count else math.nan,
        "dropped_share": dropped / count if count else math.nan,
        "p50_latency_s": float(np.percentile(served, 50)) if served.size else math.nan,
        "p99_latency_s": float(np.percentile(served, 99)) if served.size else math.nan,
        "sla_s": sla_s,
        "mean_accuracy": float((intervals["accuracy"] * duration).sum() / total) if total else math.nan,
        # Where the pipeline's end-to-end accuracy was measured (the demo pipelines), else NaN.
        "mean_measured_accuracy": float(
            np.sum(intervals["measured_accuracy"].to_numpy(float) * duration) / total
        )
        if total
        else math.nan,
        "core_seconds": float((intervals["total_cores"] * duration).sum()),
        "decisions": len(intervals),
        "plan_changes": int(intervals["changed"].sum()),
        "degraded_decisions": int(intervals["degraded"].sum()),
    }


def loop_forecasters(settings: Settings, notes: set[str], margin: float = 0.1) -> Callable[[str, int], Any]:
    """The adaptation loop's forecasters by name and horizon, as the replays build them (``lstm``: the
    registered champion, else window-max), with ``margin``; what the loop would say about them is added to
    ``notes``."""
    from ipa_tasks.forecasting.registry import default_cache_dir, forecaster_by_name

    def make(name: str, horizon_s: int) -> Any:
        forecaster, note = forecaster_by_name(
            name,
            horizon_s=horizon_s,
            tracking_uri=settings.tracking_uri,
            cache_dir=default_cache_dir(settings),
            margin=margin,
        )
        if note:
            notes.add(note)
        return forecaster

    return make


def window_forecaster(
    name: str, *, history_s: int, horizon_s: int, margin: float, make: Callable[[str], Any]
) -> Forecast:
    """A ``Forecast`` from a forecaster's name: ``oracle`` is the true peak of the next ``horizon_s``
    seconds; any other name is built by ``make`` (the loop's forecasters) and sees the last ``history_s``."""
    if name == "oracle":
        return lambda load, tick: float(np.max(load[tick : tick + horizon_s], initial=0.0)) * (1 + margin)
    forecaster = make(name)
    return lambda load, tick: float(forecaster.predict(load[max(0, tick - history_s) : tick]))
