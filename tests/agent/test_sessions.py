"""Agent sessions with scripted models (offline): the tools get the right arguments and answer from the real
planner and simulator; a bad proposal is rejected for the MILP's plan; explain cites the recorded decision's
terms; nothing is applied without permission."""

from __future__ import annotations

import pytest

from ipa_tasks.actuation.config import StageConfig, config_of
from ipa_tasks.actuation.memory import InMemoryTarget
from ipa_tasks.adaptation.decisions import append_decision, decision_row
from ipa_tasks.agent.context import PlanningContext
from ipa_tasks.agent.sessions import explain_session, plan_session, what_if_session
from ipa_tasks.optimizer.planner import Planner
from tests.agent.conftest import LOAD_RPS
from tests.agent.scripted import Script, call, propose, say, stages_of


def engineer(load: float) -> Script:
    """Reads the spec and the load, solves, checks the MILP's plan, proposes it."""
    return Script(
        [
            call("read_spec"),
            call("read_load"),
            call("solve", load_rps=load, policy="ipa"),
            lambda answers: call("evaluate_plan", stages=stages_of(answers["solve"]))(answers),
            propose(lambda answers: stages_of(answers["solve"]), "the MILP's plan: best objective found"),
        ]
    )


def test_the_tools_are_called_with_the_right_arguments_and_answer_from_the_planner(planner: Planner) -> None:
    script = engineer(LOAD_RPS)
    ctx = PlanningContext(planner, load_rps=LOAD_RPS, history=(40.0, 55.0, 52.0), forecaster="window-max")
    session = plan_session(ctx, script.model())
    assert [name for name, _ in script.calls] == [
        "read_spec",
        "read_load",
        "solve",
        "evaluate_plan",
        "final_result",
    ]
    assert script.calls[2][1] == {"load_rps": LOAD_RPS, "policy": "ipa"}
    assert script.answers["read_spec"]["pipeline"] == "digit-strips"
    assert [s["name"] for s in script.answers["read_spec"]["stages"]] == ["detect", "classify"]
    assert script.answers["read_load"] | {"observation": None} == {
        "history_s": 3,
        "last_rps": 52.0,
        "peak_rps": 55.0,
        "mean_rps": pytest.approx(49.0),
        "plan_for_rps": LOAD_RPS,
        "forecaster": "window-max",
        "observation": None,
    }
    milp = planner.plan(LOAD_RPS)
    assert stages_of(script.answers["solve"]) == stages_of({"stages": [vars(s) for s in milp.stages]})
    evaluated = script.answers["evaluate_plan"]
    assert evaluated["feasible"] and evaluated["problems"] == []
    assert evaluated["terms"]["objective"] == pytest.approx(milp.terms.objective)
    replay = evaluated["replay"]
    assert replay["requests"] == 60 * 60 and 0.0 <= replay["late_or_dropped_share"] < 0.1
    assert 0 < replay["p99_ms"] < 60
    assert "apply_plan" not in script.tools_offered, "a session without permission has no apply tool"
    assert session.verdict.accepted and session.plan.policy == "agent"
    assert any(line.startswith("agent calls solve(") for line in session.transcript)


def test_a_bad_proposal_is_rejected_and_the_milps_plan_is_used(planner: Planner) -> None:
    load = 1500.0  # detect needs 2 replicas
    script = Script(
        [
            call("solve", load_rps=load),
            propose(
                lambda answers: [dict(s, replicas=1) for s in stages_of(answers["solve"])],
                "one replica each is cheapest",
            ),
        ]
    )
    session = plan_session(PlanningContext(planner, load_rps=load), script.model())
    assert not session.verdict.accepted
    assert session.plan.stages == session.milp.stages
    assert "infeasible" in session.verdict.reason and "cannot carry" in session.verdict.reason
    assert session.verdict.reason in session.plan.reason, "the decision record keeps why"


def test_a_model_that_fails_leaves_the_milps_plan(planner: Planner) -> None:
    def broken(answers):
        raise RuntimeError("the model server went away")

    session = plan_session(PlanningContext(planner, load_rps=LOAD_RPS), Script([broken]).model())
    assert not session.verdict.accepted and session.plan.stages == session.milp.stages
    assert "agent failed (RuntimeError: the model server went away)" in session.plan.reason


def test_nothing_is_applied_without_permission(planner: Planner) -> None:
    spec = planner.spec
    running = {"detect": StageConfig("det_cc", 1, 1, 1), "classify": StageConfig("cls_mlp_s", 1, 1, 1)}
    target = InMemoryTarget({spec.name: running})
    script = engineer(LOAD_RPS)
    script.steps.insert(
        4, lambda answers: call("apply_plan", stages=stages_of(answers["solve"]), rationale="go")(answers)
    )
    # Not allowed: the tool does not exist in the session; the model's call is refused, nothing changes.
    session = plan_session(
        PlanningContext(planner, load_rps=LOAD_RPS, target=target, may_apply=False), script.model()
    )
    assert target.read(spec) == running and session.applied == ()
    assert "Unknown tool name: 'apply_plan'" in str(script.answers["apply_plan"])
    # Allowed, but the plan fails the check: refused by the tool itself, nothing changes.
    bad = Script(
        [
            call(
                "apply_plan",
                stages=[
                    dict(s, replicas=1)
                    for s in stages_of({"stages": [vars(s) for s in planner.plan(1500.0).stages]})
                ],
                rationale="cheap",
            ),
            propose(lambda a: [], "none"),
        ]
    )
    plan_session(PlanningContext(planner, load_rps=1500.0, target=target, may_apply=True), bad.model())
    assert (
        bad.answers["apply_plan"]["applied"] is False and "infeasible" in bad.answers["apply_plan"]["reason"]
    )
    assert target.read(spec) == running
    # Allowed and sound: applied through the target's safe procedure.
    allowed = engineer(LOAD_RPS)
    allowed.steps.insert(
        4, lambda answers: call("apply_plan", stages=stages_of(answers["solve"]), rationale="go")(answers)
    )
    session = plan_session(
        PlanningContext(planner, load_rps=LOAD_RPS, target=target, may_apply=True), allowed.model()
    )
    assert allowed.answers["apply_plan"]["applied"] is True
    assert target.read(spec) == config_of(planner.plan(LOAD_RPS))
    assert [report["status"] for report in session.applied] == ["applied"]


def test_explain_cites_the_objective_terms_of_the_recorded_decision(planner: Planner, tmp_path) -> None:
    from datetime import UTC, datetime

    plan = planner.plan(LOAD_RPS)
    tick = {
        "pipeline": planner.spec.name,
        "observation": {"source": "local", "last_rps": 50.0, "peak_rps": 55.0},
        "forecast": {"forecaster": "lstm", "rps": LOAD_RPS},
        "plan": plan.to_dict(),
        "steps": [],
        "apply": {"status": "unchanged"},
    }
    row = decision_row(tick, "run-1", datetime(2026, 12, 2, 4, 0, tzinfo=UTC))
    append_decision(tmp_path, planner.spec.name, row)
    terms = ("objective", "accuracy_term", "cost_term", "batch_term", "change_term")

    def explanation(answers) -> str:
        seen = answers["decision_under_review"]
        return "Chosen because " + ", ".join(f"{name} = {seen[name]:.4f}" for name in terms)

    script = Script([call("decision_under_review"), call("past_decisions", limit=3), say(explanation)])
    ctx = PlanningContext(planner, load_rps=LOAD_RPS, home=tmp_path, decision=row)
    session = explain_session(ctx, script.model())
    assert script.answers["decision_under_review"] == row
    for name in terms:
        assert f"{name} = {row[name]:.4f}" in session.text
        assert session.record[name] == row[name]
    assert row["objective"] == pytest.approx(plan.terms.objective)
    (recorded,) = script.answers["past_decisions"]["decisions"]
    assert recorded["configuration"] == row["configuration"]


def test_what_if_answers_with_the_read_only_tools_and_applies_nothing(planner: Planner) -> None:
    target = InMemoryTarget()
    script = Script(
        [
            call("solve", load_rps=300.0),
            say(lambda answers: f"At 300 requests/s the MILP needs {answers['solve']['total_cores']} cores."),
        ]
    )
    ctx = PlanningContext(planner, load_rps=LOAD_RPS, target=target, may_apply=True)
    session = what_if_session(ctx, script.model(), "What if the load triples?")
    assert session.text == f"At 300 requests/s the MILP needs {planner.plan(300.0).total_cores} cores."
    assert "apply_plan" not in script.tools_offered and target.running == {}
