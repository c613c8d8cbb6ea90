"""The planner against the brute-force reference, and the guarantees every plan keeps."""

from __future__ import annotations

import math
import sys

import pytest
from hypothesis import HealthCheck, given, settings

from ipa_tasks.optimizer.plan import Plan
from ipa_tasks.optimizer.planner import Planner
from ipa_tasks.optimizer.queueing import batch_formation_delay, queue_wait
from ipa_tasks.optimizer.solvers import combination_objective
from ipa_tasks.profiles import LATENCY_COLUMNS
from tests.optimizer.instances import instances, profile_rows, two_stage_spec


def _gurobi_state() -> str:
    """'ok', 'no-size-limit' (a full licence) or why Gurobi cannot run here."""
    import numpy as np
    from scipy import sparse

    from ipa_tasks.optimizer.formulation import MilpModel
    from ipa_tasks.optimizer.solvers import SolverUnavailable, solve_gurobi

    def model(n: int) -> MilpModel:
        return MilpModel(
            np.ones(n), sparse.csr_matrix(np.ones((1, n))), np.zeros(1), np.ones(1), np.zeros(n), np.ones(n),
            np.ones(n, dtype=bool), (slice(0, n),),
        )  # fmt: skip

    try:
        solve_gurobi(model(1), 1.0)
    except SolverUnavailable as exc:
        return str(exc)
    try:
        solve_gurobi(model(2001), 1.0)
    except SolverUnavailable:
        return "ok"
    return "no-size-limit"


GUROBI = _gurobi_state()
needs_gurobi = pytest.mark.skipif(
    GUROBI not in ("ok", "no-size-limit"), reason=f"Gurobi cannot run: {GUROBI}"
)
needs_size_limit = pytest.mark.skipif(GUROBI != "ok", reason=f"needs the pip licence's size limit ({GUROBI})")
SOLVERS = (
    ["gurobi", "highs", "brute-force"] if GUROBI in ("ok", "no-size-limit") else ["highs", "brute-force"]
)

PROPERTY_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TOLERANCE = 1e-6


def reference_objective(
    planner: Planner, load: float, current: Plan | None, policy: str = "ipa"
) -> float | None:
    """Brute force over the *unpruned* options: checks the formulation and the pruning together."""
    plan = planner.plan(load, solver="brute-force", prune=False, current=current, policy=policy)
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
        # Recomputed from the profile, not taken from the plan: latency at the spec's quantile, plus batch
        # formation and queueing at the plan's replicas.
        profile = planner.profile.set_index(["stage", "variant", "batch_size", "cores"])
        column = LATENCY_COLUMNS[spec.latency_quantile]
        latency = 0.0
        for s in plan.stages:
            row = profile.loc[(s.stage, s.variant, s.batch_size, s.cores)]
            h = float(row["throughput_rps"])
            load = plan.load_rps * spec.stage(s.stage).load_factor  # what this stage receives
            assert s.replicas * h > load or load == 0, f"stage {s.stage} cannot carry its load"
            latency += float(row[column]) + float(batch_formation_delay(load, s.batch_size))
            latency += float(queue_wait(load, s.batch_size, h, s.replicas, spec.latency_quantile))
        assert latency <= spec.sla_s + 1e-9, "the SLA constraint must hold"
        assert latency == pytest.approx(plan.latency_s)
        if spec.max_total_cores is not None:
            assert sum(s.cores * s.replicas for s in plan.stages) <= spec.max_total_cores


@pytest.mark.parametrize("solver", SOLVERS)
@PROPERTY_SETTINGS
@given(instance=instances())
def test_optimum_equals_brute_force(solver, instance):
    spec, profile, load, policy = instance
    planner = Planner(spec, profile)
    expected = reference_objective(planner, load, None, policy)
    plan = planner.plan(load, solver=solver, policy=policy)
    assert_plan_is_safe(planner, plan)
    if expected is None:
        assert plan.degraded
    else:
        assert not plan.degraded
        assert plan.solver == solver
        assert plan.terms.objective == pytest.approx(expected, abs=TOLERANCE)
        # The reported terms are the objective of the chosen options, evaluated directly.
        options = planner.options(load, policy)
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
    spec, profile, load, _ = instance
    planner = Planner(spec, profile)
    current = planner.plan(load / 2)  # what runs now: the plan for half the load
    expected = reference_objective(planner, load, current)
    plan = planner.plan(load, current=current)
    assert_plan_is_safe(planner, plan)
    if expected is None:
        assert plan.degraded
    else:
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
    # The highest throughput any plan reaches: per stage its fastest point at 20 replicas, the slowest stage.
    best = profile.groupby("stage")["throughput_rps"].max().min() * 20
    assert plan.capacity_rps == pytest.approx(best)


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


@needs_size_limit
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


@needs_gurobi
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


@needs_gurobi
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


def test_solver_timeout_uses_the_feasible_plan_found_while_pruning(monkeypatch):
    """A solver that runs out of time with nothing must not turn a servable load into a degraded plan."""
    from ipa_tasks.optimizer import planner as planner_module
    from ipa_tasks.optimizer.solvers import SolverResult

    monkeypatch.setattr(
        planner_module, "solve_gurobi", lambda model, limit: SolverResult("gurobi", "time_limit", None, limit)
    )
    spec, profile = two_stage_spec()
    planner = Planner(spec, profile)
    plan = planner.plan(20.0, solver="gurobi", time_limit_s=0.001)
    assert not plan.degraded
    assert plan.status == "time_limit" and plan.solver == "gurobi"
    assert any("found no solution within 0.001 s" in note for note in plan.notes)
    assert_plan_is_safe(planner, plan)


def test_zero_time_limit_is_rejected():
    spec, profile = two_stage_spec()
    with pytest.raises(ValueError, match="time limit must be > 0"):
        Planner(spec, profile).plan(5.0, time_limit_s=0)


@needs_gurobi
@pytest.mark.parametrize(("pipeline", "policy", "load"), [("audio-sent", "ipa", 20), ("video", "ipa", 40)])
def test_every_solver_settles_a_tie_the_same_way(pipeline, policy, load):
    """audio-sent at 20 rps: 2 cores x 1 replica and 1 core x 2 replicas cost the same (a real tie)."""
    from ipa_tasks.spec import shipped_specs_dir

    planner = Planner.from_files(shipped_specs_dir() / f"{pipeline}.yaml")
    plans = [planner.plan(load, policy=policy, solver=s) for s in ("gurobi", "highs", "brute-force")]
    keys = {tuple((s.variant, s.batch_size, s.cores, s.replicas) for s in p.stages) for p in plans}
    assert len(keys) == 1


def test_current_plan_of_another_pipeline_is_rejected():
    spec, profile = two_stage_spec()
    planner = Planner(spec, profile)
    other = Plan.from_dict({"pipeline": "video", "stages": []})
    with pytest.raises(ValueError, match="is for pipeline 'video'"):
        planner.plan(5.0, current=other)
    stray = Plan.from_dict(
        {"stages": [{"stage": "crop", "variant": "x", "batch_size": 1, "cores": 1, "replicas": 1}]}
    )
    with pytest.raises(ValueError, match="names stage"):
        planner.plan(5.0, current=stray)


def test_synthetic_profiles_are_named_in_every_plan():
    from ipa_tasks.spec import shipped_specs_dir

    plan = Planner.from_files(shipped_specs_dir() / "video.yaml").plan(10.0)
    assert "all profile rows are synthetic, not measurements" in plan.notes
    spec, profile = two_stage_spec()
    assert not any("synthetic" in note for note in Planner(spec, profile).plan(10.0).notes)


def test_fa2_without_accuracies_says_what_to_pin():
    spec, profile = two_stage_spec()
    data = spec.model_dump(mode="json", exclude={"source_path"})
    data["stages"][0]["variants"][1].pop("accuracy")
    from ipa_tasks.profiles import ProfileError
    from ipa_tasks.spec import parse_spec

    with pytest.raises(ProfileError, match=r"pin one in baselines.fa2_high"):
        Planner(parse_spec(data), profile).plan(5.0, policy="fa2-high")


def test_a_stage_that_receives_more_requests_is_sized_for_them():
    """A detector emitting 3 crops per image sends its classifier 3x the pipeline's load."""
    spec, profile = two_stage_spec()
    data = spec.model_dump(mode="json", exclude={"source_path"})
    data["stages"][1]["load_factor"] = 3.0
    from ipa_tasks.spec import parse_spec

    fanned = Planner(parse_spec(data), profile)
    plan = fanned.plan(20.0)
    assert not plan.degraded
    assert_plan_is_safe(fanned, plan)
    classify = plan.stage("classify")
    assert classify.capacity_rps > 60.0, "sized for 3 x 20 requests/s, not 20"
    assert classify.load_factor == 3.0
    assert plan.capacity_rps == pytest.approx(
        min(plan.stage("detect").capacity_rps, classify.capacity_rps / 3.0)
    )
    # Beyond capacity the degraded plan's capacity is in pipeline requests: the stage's over its factor.
    import pandas as pd

    overload = fanned.plan(10_000.0)
    assert overload.degraded
    best = profile.groupby("stage")["throughput_rps"].max() * 20 / pd.Series({"detect": 1.0, "classify": 3.0})
    assert overload.capacity_rps == pytest.approx(best.min())
