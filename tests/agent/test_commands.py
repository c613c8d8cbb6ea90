"""``ipa agent``: without a model it says what to set and exits 2; with one (pydantic-ai's built-in test
model here) it prints the session, the guard's verdict and the plan used."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ipa_tasks.cli import main


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IPA_HOME", str(tmp_path / "ipa"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "ipa"


@pytest.mark.parametrize(
    "argv",
    [
        ["agent", "plan", "--spec", "digit-strips", "--load", "60"],
        ["agent", "explain", "--spec", "digit-strips"],
        ["agent", "what-if", "--spec", "digit-strips", "--load", "60", "what if it triples?"],
        ["replay", "--spec", "digit-strips", "--window", "bursty", "--policy", "agent"],
    ],
    ids=["plan", "explain", "what-if", "replay"],
)
def test_without_a_model_each_command_says_what_to_set(argv, monkeypatch, capsys) -> None:
    monkeypatch.delenv("IPA_AGENT_MODEL", raising=False)
    assert main(argv) == 2
    assert "no agent model is configured: set IPA_AGENT_MODEL" in capsys.readouterr().err


def test_plan_prints_the_verdict_and_the_plan_used(monkeypatch, capsys) -> None:
    monkeypatch.setenv("IPA_AGENT_MODEL", "test")
    assert main(["agent", "plan", "--spec", "digit-strips", "--load", "1500", "--json"]) == 0
    outcome = json.loads(capsys.readouterr().out)
    assert outcome["accepted"] is False and outcome["reason"].startswith("agent plan rejected")
    assert outcome["plan"]["stages"] == outcome["milp"]["stages"]
    assert outcome["proposal"]["stages"][0]["stage"] == "a", "the test model's proposal, kept for the record"
    assert any(line.startswith("agent calls solve(") for line in outcome["transcript"])
    assert outcome["applied"] == []


def test_explain_without_a_recorded_decision_says_where_it_looked(monkeypatch, capsys, home) -> None:
    monkeypatch.setenv("IPA_AGENT_MODEL", "test")
    assert main(["agent", "explain", "--spec", "digit-strips", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "no decision of digit-strips at all" in err and str(home / "adaptation" / "digit-strips") in err


def test_explain_prints_the_records_own_terms_after_the_agents_words(monkeypatch, capsys, home) -> None:
    from datetime import UTC, datetime

    from ipa_tasks.adaptation.decisions import append_decision, decision_row
    from ipa_tasks.optimizer.planner import Planner
    from ipa_tasks.spec import resolve_spec_path

    plan = Planner.from_files(resolve_spec_path("digit-strips")).plan(60.0)
    tick = {"pipeline": "digit-strips", "forecast": {"rps": 60.0}, "plan": plan.to_dict(), "steps": []}
    row = decision_row(tick, "r", datetime.now(UTC))
    append_decision(home, "digit-strips", row)
    monkeypatch.setenv("IPA_AGENT_MODEL", "test")
    assert main(["agent", "explain", "--spec", "digit-strips", "--quiet"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith(f"recorded decision {row['time']}")
    assert f"objective {row['objective']:.4g}" in last and f"cost_term {row['cost_term']:.4g}" in last
