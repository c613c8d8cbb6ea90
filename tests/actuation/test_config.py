"""The steps from one configuration to another: the safe order, and nothing for an unchanged plan."""

from __future__ import annotations

from ipa_tasks.actuation.config import StageConfig, Step, config_of, plan_steps
from ipa_tasks.optimizer.plan import Plan, StagePlan


def cfg(variant: str = "a", batch: int = 1, cores: int = 1, replicas: int = 1) -> StageConfig:
    return StageConfig(variant=variant, batch_size=batch, cores=cores, replicas=replicas)


def test_an_unchanged_configuration_needs_no_step():
    running = {"detect": cfg(), "classify": cfg("b", 4, 2, 3)}
    assert plan_steps(running, dict(running)) == []


def test_scale_out_comes_first_switches_next_batch_then_scale_in_last():
    running = {"detect": cfg("a", 1, 1, 2), "classify": cfg("x", 4, 1, 4), "route": cfg("r", 2, 1, 1)}
    desired = {"detect": cfg("b", 8, 1, 5), "classify": cfg("x", 4, 1, 1), "route": cfg("r", 8, 1, 1)}
    steps = plan_steps(running, desired)
    assert [(s.kind, s.stage) for s in steps] == [
        ("scale_out", "detect"),
        ("switch", "detect"),
        ("batch", "route"),
        ("scale_in", "classify"),
    ]
    # Scaling out keeps the old variant: the extra replicas serve while the switch rolls.
    assert steps[0].after == cfg("a", 1, 1, 5)
    # The switch carries the new batch size, so no separate batch step for that stage.
    assert steps[1].before == cfg("a", 1, 1, 5) and steps[1].after == cfg("b", 8, 1, 5)


def test_each_step_starts_where_the_previous_one_of_its_stage_ended():
    running = {"s": cfg("a", 1, 1, 6)}
    desired = {"s": cfg("b", 2, 2, 2)}
    steps = plan_steps(running, desired)
    assert [s.kind for s in steps] == ["switch", "scale_in"]
    assert steps[0].before == running["s"]
    assert steps[1].before == steps[0].after and steps[1].after == desired["s"]


def test_a_stage_that_runs_nothing_is_created_and_one_the_plan_omits_is_left_alone():
    steps = plan_steps({"old": cfg()}, {"new": cfg("n", 2, 1, 3)})
    assert steps == [Step("create", "new", None, cfg("n", 2, 1, 3))]


def test_a_plan_becomes_a_configuration_and_steps_survive_json():
    plan = Plan(
        "p",
        "ipa",
        10.0,
        1.0,
        (StagePlan("s", "v", 4, 2, 3),),
    )
    assert config_of(plan) == {"s": cfg("v", 4, 2, 3)}
    step = plan_steps({"s": cfg()}, config_of(plan))[0]
    assert Step.from_dict(step.to_dict()) == step
