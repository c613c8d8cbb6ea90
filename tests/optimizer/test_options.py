"""Option enumeration and dominance pruning."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ipa_tasks.optimizer.options import _dominated, _dominated_with_cores
from ipa_tasks.optimizer.planner import Planner
from tests.optimizer.instances import two_stage_spec


def naive_dominated(criteria: np.ndarray) -> np.ndarray:
    """Quadratic reference: dominated if another is no worse everywhere, better or earlier on ties."""
    k = len(criteria)
    out = np.zeros(k, dtype=bool)
    for i in range(k):
        for j in range(k):
            no_worse = i != j and np.all(criteria[j] <= criteria[i])
            if no_worse and (np.any(criteria[j] < criteria[i]) or j < i):
                out[i] = True
    return out


LEVELS = [0.1, 0.2, 0.3, 0.5]  # few distinct values, so ties are common


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_fast_pruning_matches_the_quadratic_definition(data):
    k = data.draw(st.integers(1, 25))

    def draw() -> np.ndarray:
        return np.array(data.draw(st.lists(st.sampled_from(LEVELS), min_size=k, max_size=k)))

    score, latency, penalty, cores = draw(), draw(), draw(), draw()
    expected = naive_dominated(np.column_stack([-score, latency, penalty]))
    assert np.array_equal(_dominated(score, latency, penalty), expected)
    expected4 = naive_dominated(np.column_stack([-score, latency, penalty, cores]))
    # The 4-criterion version breaks exact ties by its own sort order, so compare how many survive.
    assert (~_dominated_with_cores(score, latency, penalty, cores)).sum() == (~expected4).sum()


def test_options_carry_the_load_within_bounds_and_prune_shrinks_them():
    spec, profile = two_stage_spec()
    planner = Planner(spec, profile)
    raw = planner.options(30.0, prune=False)
    pruned = planner.options(30.0)
    for o in raw:
        assert np.all(o.replicas * o.throughput_rps > 30.0)
        assert np.all((o.replicas >= 1) & (o.replicas <= 20))
        assert np.all(o.latency_s <= spec.sla_s)
    assert sum(len(o) for o in pruned) < sum(len(o) for o in raw)


def test_rim_pins_replicas_and_fa2_pins_variants():
    spec, profile = two_stage_spec()
    planner = Planner(spec, profile)
    rim = planner.plan(10.0, policy="rim")
    assert [s.replicas for s in rim.stages] == [3, 3]
    low, high = planner.plan(10.0, policy="fa2-low"), planner.plan(10.0, policy="fa2-high")
    assert [s.variant for s in low.stages] == ["small", "s"]
    assert [s.variant for s in high.stages] == ["big", "l"]
    ipa = planner.plan(10.0)
    assert ipa.terms.objective >= max(p.terms.objective for p in (rim, low, high)) - 1e-9


def test_pinned_replicas_above_what_the_load_needs_are_kept():
    """RIM over-provisions: 15 replicas at a load one replica carries must still be an option."""
    spec, profile = two_stage_spec(baselines={"rim_replicas": {"detect": 15, "classify": 15}})
    plan = Planner(spec, profile).plan(2.0, policy="rim")
    assert not plan.degraded
    assert [s.replicas for s in plan.stages] == [15, 15]


def test_high_minimum_replicas_are_respected():
    spec, profile = two_stage_spec()
    data = spec.model_dump(mode="json", exclude={"source_path"})
    data["stages"][0]["replicas"] = {"min": 12, "max": 20}
    data["baselines"] = {}
    from ipa_tasks.spec import parse_spec

    plan = Planner(parse_spec(data), profile).plan(1.0)
    assert not plan.degraded
    assert plan.stages[0].replicas == 12
