"""The planner against the brute-force reference, and the guarantees every plan keeps."""

from __future__ import annotations

import math
import sys

import pytest
from hypothesis import HealthCheck, given, settings

from ipa_tasks.optimizer.plan import Plan
from ipa_tasks.optimizer.planner import Planner
from ipa_tasks.optimizer.solvers import combination_objective
from tests.optimizer.instances import instances, profile_rows, two_stage_spec

PROPERTY_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TOLERANCE = 1e-6


def reference_objective(planner: Planner, load: float, current: Plan | None) -> float | None:
    """Brute force over the *unpruned* options: checks the formulation and the pruning together."""
    plan = planner.plan(load, solver="brute-force", prune=False, current=current)
    return None if plan.degraded else plan.terms.objective


def assert_plan_is_safe(planner: Planner, plan: Plan) -> None:
    spec = planner.spec
    assert [s.stage for s in plan.stages] == spec.stage_names
    for s in plan.stages:
        stage = spec.stage(s.stage)
        assert stage.replicas.min <= s.replicas <= stage.replicas.max
        assert s.batch_size in stage.batch_sizes
        assert s.cores in stage.cores
        assert s.variant in {v.name for v in stage.variants}
    if not plan.degraded:
        assert plan.latency_s <= spec.sla_s + 1e-9, "the SLA constraint must hold"
        for s in plan.stages:
            assert s.capacity_rps > plan.load_rps or plan.load_rps == 0, (
                f"stage {s.stage} cannot carry the load"
            )
        if spec.max_total_cores is not None:
            assert plan.total_cores <= spec.max_total_cores


@pytest.mark.parametrize("solver", ["gurobi", "highs", "brute-force"])
@PROPERTY_SETTINGS
@given(instance=instances())
def test_optimum_equals_brute_force(solver, instance):
    spec, profile, load = instance
    planner = Planner(spec, profile)
    expected = reference_objective(planner, load, None)
    plan = planner.plan(load, solver=solver)
    assert_plan_is_safe(planner, plan)
    if expected is None:
        assert plan.degraded
    else:
        assert not plan.degraded
        assert plan.solver == solver
        assert plan.terms.objective == pytest.approx(expected, abs=TOLERANCE)
        # The reported terms are the objective of the chosen options, evaluated directly.
        options = planner.options(load)
        chosen = [
            next(
                i
                for i in range(len(o))
                if (o.variant_names[o.variant[i]], o.batch_size[i], o.cores[i], o.replicas[i])
                == (s.variant, s.batch_size, s.cores, s.replicas)
            )
            for o, s in zip(options, plan.stages, strict=True)
        ]
        direct = combination_objective(options, chosen, spec.objective, spec.accuracy_method)
        assert direct == pytest.approx(plan.terms.objective, abs=TOLERANCE)


@PROPERTY_SETTINGS
@given(instance=instances())
def test_change_penalty_optimum_equals_brute_force(instance):
    spec, profile, load = instance
    planner = Planner(spec, profile)
    current = planner.plan(load / 2)  # what runs now: the plan for half the load
    expected = reference_objective(planner, load, current)
    plan = planner.plan(load, current=current)
    assert_plan_is_safe(planner, plan)
    if expected is not None:
        assert plan.terms.objective == pytest.approx(expected, abs=TOLERANCE)


def test_more_load_buys_more_capacity_or_lighter_variants():
    spec, profile = two_stage_spec()
    planner = Planner(spec, profile)
    low, high = planner.plan(1.0), planner.plan(50.0)
    assert [s.variant for s in low.stages] == ["big", "l"], "at low load the accurate variants fit"
    assert high.capacity_rps > 50.0
    assert high.total_cores > low.total_cores or high.terms.accuracy < low.terms.accuracy


def test_same_input_same_plan():
    spec, profile = two_stage_spec()
    plans = [Planner(spec, profile).plan(20.0).to_dict() for _ in range(3)]
    for plan in plans:
        plan.pop("build_time_s")
        plan.pop("solve_time_s")
    assert plans[0] == plans[1] == plans[2]


def test_queueing_makes_an_extra_replica_worth_buying():
    """With a tight SLA the fewest replicas that carry the load queue too long; the plan adds one."""
    from ipa_tasks.optimizer.queueing import queue_wait

    spec, profile = two_stage_spec(sla_s=0.35)
    plan = Planner(spec, profile).plan(25.0)
    assert not plan.degraded
    fewest = [math.floor(25.0 / s.throughput_rps) + 1 for s in plan.stages]
    assert any(s.replicas > n for s, n in zip(plan.stages, fewest, strict=True))
    # The same variants and batches with the fewest replicas would break the SLA through queueing alone.
    with_fewest = sum(
        s.model_latency_s + s.batch_wait_s + float(queue_wait(25.0, s.batch_size, s.throughput_rps, n))
        for s, n in zip(plan.stages, fewest, strict=True)
    )
    assert with_fewest > spec.sla_s >= plan.latency_s


def test_change_penalty_keeps_the_running_variant():
    spec, profile = two_stage_spec()
    free = Planner(spec, profile).plan(12.0)
    running = Plan.from_dict(
        {
            "stages": [
                {"stage": s.stage, "variant": alt, "batch_size": 1, "cores": 1, "replicas": 4}
                for s, alt in zip(free.stages, ["small", "s"], strict=True)
            ]
        }
    )
    sticky_spec, _ = two_stage_spec(
        objective={"accuracy_weight": 10.0, "cost_weight": 0.5, "change_penalty": 100.0}
    )
    sticky = Planner(sticky_spec, profile).plan(12.0, current=running)
    assert [s.variant for s in sticky.stages] == ["small", "s"]
    assert sticky.terms.change_term == 0.0
    assert [s.variant for s in free.stages] != ["small", "s"], "without the penalty the plan would switch"


def test_degraded_when_load_exceeds_capacity():
    spec, profile = two_stage_spec()
    plan = Planner(spec, profile).plan(10_000.0)
    assert plan.degraded and plan.status == "degraded"
    assert "more than the pipeline can carry" in plan.reason and "bottleneck" in plan.reason
    assert all(s.replicas == 20 or s.capacity_rps >= plan.capacity_rps for s in plan.stages)
    assert plan.capacity_rps == pytest.approx(
        max(min(20 * p for p in per_stage) for per_stage in [[s.throughput_rps for s in plan.stages]])
    )


def test_degraded_when_sla_is_unreachable_names_the_fastest_latency():
    spec, profile = two_stage_spec(sla_s=0.01)
    plan = Planner(spec, profile).plan(5.0)
    assert plan.degraded
    assert "no configuration meets the SLA of 0.01 s" in plan.reason
    assert plan.stages and plan.terms is not None


def test_degraded_plan_respects_the_core_budget():
    spec, profile = two_stage_spec(max_total_cores=10)
    plan = Planner(spec, profile).plan(10_000.0)
    assert plan.degraded
    assert plan.total_cores <= 10
    assert "within the core budget" in plan.reason


def test_gurobi_size_limit_falls_back_to_highs():
    """A model over the pip licence's 2000-variable limit is refused by Gurobi and solved by HiGHS."""
    stages = [
        {
            "name": f"s{i}",
            "variants": [
                {"name": f"v{j}", "model": {"kind": "reference", "uri": "t"}, "accuracy": 0.5 + j / 40}
                for j in range(12)
            ],
            "batch_sizes": [1, 2, 4, 8],
            "cores": [1, 2, 4],
            "replicas": {"min": 1, "max": 100},
        }
        for i in range(4)
    ]
    import pandas as pd

    from ipa_tasks.spec import parse_spec
    from tests.optimizer.instances import profile_rows

    spec = parse_spec({"name": "big", "sla_s": 30.0, "stages": stages, "objective": {"cost_weight": 0.01}})
    rows = []
    for i in range(4):
        for j in range(12):
            rows += profile_rows("big", f"s{i}", f"v{j}", 0.02 + 0.01 * j, [1, 2, 4, 8], [1, 2, 4], 0.5)
    planner = Planner(spec, pd.DataFrame(rows))
    assert sum(len(o) for o in planner.options(30.0, prune=False)) > 2000
    plan = planner.plan(30.0, prune=False)
    assert plan.solver == "highs"
    assert any("size-limited licence" in note and "10010" in note for note in plan.notes)
    pruned = planner.plan(30.0)
    assert pruned.solver == "gurobi"
    assert plan.terms.objective == pytest.approx(pruned.terms.objective, abs=TOLERANCE)


def test_missing_gurobipy_falls_back_to_highs(monkeypatch):
    monkeypatch.setitem(sys.modules, "gurobipy", None)  # makes `import gurobipy` raise ImportError
    spec, profile = two_stage_spec()
    plan = Planner(spec, profile).plan(10.0)
    assert plan.solver == "highs"
    assert any("gurobipy is not installed" in note for note in plan.notes)


def test_explicit_gurobi_does_not_fall_back(monkeypatch):
    from ipa_tasks.optimizer.solvers import SolverUnavailable

    monkeypatch.setitem(sys.modules, "gurobipy", None)
    spec, profile = two_stage_spec()
    with pytest.raises(SolverUnavailable):
        Planner(spec, profile).plan(10.0, solver="gurobi")


def test_plan_json_round_trip():
    spec, profile = two_stage_spec()
    plan = Planner(spec, profile).plan(10.0)
    again = Plan.from_dict(__import__("json").loads(plan.to_json()))
    assert [(s.stage, s.variant, s.batch_size, s.cores, s.replicas) for s in again.stages] == [
        (s.stage, s.variant, s.batch_size, s.cores, s.replicas) for s in plan.stages
    ]


@pytest.mark.parametrize("bad", [-1.0, math.inf, math.nan])
def test_bad_load_is_rejected(bad):
    spec, profile = two_stage_spec()
    with pytest.raises(ValueError, match="load must be"):
        Planner(spec, profile).plan(bad)


def test_point_too_slow_at_its_fewest_replicas_still_counts():
    """Regression: a point that misses the SLA at its fewest replicas but is optimal with more of them.

    Found by the property test: the point-level bound once left such points out entirely.
    """
    import pandas as pd

    from ipa_tasks.spec import parse_spec

    measured = {  # (stage, batch, cores) -> p50 seconds
        ("s0", 1, 2): 0.100101, ("s0", 4, 2): 0.387942, ("s0", 1, 4): 0.073151, ("s0", 4, 4): 0.283496,
        ("s1", 1, 2): 0.045557, ("s1", 4, 2): 0.119105, ("s1", 1, 4): 0.033292, ("s1", 4, 4): 0.087038,
        ("s2", 1, 2): 0.165241, ("s2", 4, 2): 0.557062, ("s2", 1, 4): 0.120753, ("s2", 4, 4): 0.407084,
    }  # fmt: skip
    rows = [
        {**row, "batch_size": b, "cores": c, "latency_p50_s": p50, "latency_p95_s": p50 * 1.1,
         "latency_p99_s": p50 * 1.25, "throughput_rps": b / p50}
        for (stage, b, c), p50 in measured.items()
        for row in profile_rows("rand", stage, "v0", 0.1, [1], [1], 0.5)
    ]  # fmt: skip
    stages = [
        {"name": name, "variants": [{"name": "v0", "model": {"kind": "reference", "uri": "t"},
                                     "accuracy": acc}],
         "batch_sizes": [1, 4], "cores": [2, 4], "replicas": {"min": 1, "max": 6}}
        for name, acc in (("s0", 0.37028), ("s1", 0.74734), ("s2", 0.51714))
    ]  # fmt: skip
    spec = parse_spec(
        {"name": "rand", "sla_s": 1.97166, "accuracy_method": "sum", "stages": stages,
         "objective": {"accuracy_weight": 100.0, "cost_weight": 1.0}}
    )  # fmt: skip
    planner = Planner(spec, pd.DataFrame(rows))
    expected = reference_objective(planner, 27.16844, None)
    for solver in ("gurobi", "highs", "brute-force"):
        assert planner.plan(27.16844, solver=solver).terms.objective == pytest.approx(expected, abs=TOLERANCE)


def test_any_gurobi_error_falls_back_to_highs(monkeypatch):
    """An expired or missing licence must not stop planning: HiGHS answers and the plan says why."""
    import gurobipy

    from ipa_tasks.optimizer import solvers

    def no_licence():
        raise gurobipy.GurobiError(10009, "No Gurobi license found")

    monkeypatch.setattr(solvers, "_gurobi_env", no_licence)
    spec, profile = two_stage_spec()
    plan = Planner(spec, profile).plan(10.0)
    assert plan.solver == "highs"
    assert any("No Gurobi license found" in note and "10009" in note for note in plan.notes)
