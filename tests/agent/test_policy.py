"""The opt-in policy ``agent`` in the loop (an ``ipa_adapt`` tick's decide step) and in the replay: the
agent's plan is used only when it passes the guard; otherwise the MILP's, with the reason recorded."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from ipa_tasks.actuation.memory import InMemoryTarget
from ipa_tasks.adaptation.decisions import record_tick
from ipa_tasks.adaptation.steps import TickOptions, decide, forecast_load, observe_load, pipelines_to_adapt
from ipa_tasks.agent.policy import agent_choice
from ipa_tasks.monitoring import append_rates
from ipa_tasks.optimizer.planner import Planner
from ipa_tasks.settings import Settings
from ipa_tasks.simulation.replay import ReplayOptions, simulate
from tests.agent.scripted import Script, call, propose, stages_of

OPTIONS = TickOptions(policy="agent", forecaster="window-max", target="local", forecast_margin=0.0)


def decided_tick(settings: Settings, lines: list[str]) -> dict:
    now = int(time.time())
    path = settings.home / "serving" / "digit-strips" / "requests.csv"
    append_rates(path, {s: 40 for s in range(now - 130, now)})
    (tick,) = pipelines_to_adapt(["digit-strips"])
    tick = observe_load(settings, tick, OPTIONS, lines.append, now=now)
    tick = forecast_load(settings, tick, OPTIONS, lines.append)
    return decide(settings, tick, OPTIONS, InMemoryTarget(), lines.append)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "ipa", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_without_a_model_the_tick_plans_with_the_milp_and_says_why(settings, monkeypatch) -> None:
    monkeypatch.delenv("IPA_AGENT_MODEL", raising=False)
    lines: list[str] = []
    tick = decided_tick(settings, lines)
    assert "error" not in tick and tick["plan"]["policy"] == "ipa"
    assert "policy agent: no agent model is configured" in tick["plan"]["reason"]
    assert any("no agent model is configured" in line for line in lines)


def test_a_bad_agent_plan_is_rejected_in_the_tick_and_the_reason_recorded(settings, monkeypatch) -> None:
    # pydantic-ai's built-in test model calls every tool with made-up arguments and proposes stage "a".
    monkeypatch.setenv("IPA_AGENT_MODEL", "test")
    lines: list[str] = []
    tick = decided_tick(settings, lines)
    assert tick["plan"]["policy"] == "ipa", "the MILP's plan is used"
    assert tick["plan"]["reason"].startswith("agent plan rejected, the MILP's used: infeasible")
    assert any(line.startswith("  agent calls evaluate_plan(") for line in lines), "the transcript is logged"
    row = record_tick(
        settings.home, settings.tracking_uri, {**tick, "apply": {"status": "dry_run"}}, "r", print
    )
    assert row["reason"] == tick["plan"]["reason"], "the decision record keeps why"


def test_the_replay_decides_with_the_agent_at_every_tick(planner: Planner) -> None:
    workload = np.full(90, 50, dtype=int)
    verdicts: list[str] = []
    script = Script(
        [
            call("solve"),
            propose(
                lambda answers: [dict(s, replicas=s["replicas"] + 1) for s in stages_of(answers["solve"])]
            ),
            call("solve"),
            propose(lambda answers: stages_of(answers["solve"])),
        ]
    )
    result = simulate(
        planner,
        planner.profile,
        workload,
        lambda series, tick: 50.0,
        ReplayOptions(interval_s=30),
        agent_choice(script.model(), margin=0.5, replay_s=0, log=verdicts.append),
    )
    assert len(verdicts) == 3 and all(v.startswith("agent plan used") for v in verdicts)
    assert result.summary["decisions"] == 3 and result.summary["requests"] == 90 * 50
