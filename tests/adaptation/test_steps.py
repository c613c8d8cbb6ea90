"""The tick's steps on the embedded default (local target, local request counts), without Airflow."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from ipa_tasks.actuation.memory import InMemoryTarget
from ipa_tasks.actuation.target import TargetError
from ipa_tasks.adaptation.state import read_state
from ipa_tasks.adaptation.steps import (
    TickOptions,
    apply_plan,
    decide,
    forecast_load,
    load_source_config,
    make_target,
    observe_load,
    pipelines_chosen,
    pipelines_to_adapt,
)
from ipa_tasks.monitoring import append_rates
from ipa_tasks.settings import Settings
from ipa_tasks.spec import SpecError


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "ipa", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")


def counts(settings: Settings, rps: int, now: int) -> None:
    path = settings.home / "serving" / "digit-strips" / "requests.csv"
    append_rates(path, {s: rps for s in range(now - 130, now)})


OPTIONS = TickOptions(forecaster="window-max", target="local", forecast_margin=0.0)


def tick_until_decided(settings: Settings, now: int, log=print, target=None) -> dict:
    (tick,) = pipelines_to_adapt(["digit-strips"])
    tick = observe_load(settings, tick, OPTIONS, log, now=now)
    tick = forecast_load(settings, tick, OPTIONS, log)
    return decide(settings, tick, OPTIONS, target or InMemoryTarget(), log)


def test_a_broken_spec_stops_the_run_naming_the_file(tmp_path: Path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: broken\nsla_s: -1\nstages: []\n")
    with pytest.raises(SpecError, match=r"broken\.yaml: sla_s"):
        pipelines_to_adapt([str(broken)])


def test_observed_load_is_forecast_planned_and_remembered(settings: Settings):
    now = int(time.time())
    counts(settings, 40, now)
    lines: list[str] = []
    tick = tick_until_decided(settings, now, lines.append)
    assert tick["forecast"]["rps"] == 40 and tick["forecast"]["forecaster"] == "window-max"
    assert tick["plan"]["load_rps"] == 40 and [s["kind"] for s in tick["steps"]] == ["create", "create"]
    assert read_state(settings.home, "digit-strips").last_known_rps == 40
    assert any(line.startswith("plan at 40.00 requests/s (ipa, optimal)") for line in lines)
    assert any("profile shipped with the spec" in line for line in lines)


def test_the_forecast_margin_is_added_to_the_forecast(settings: Settings):
    now = int(time.time())
    counts(settings, 40, now)
    (tick,) = pipelines_to_adapt(["digit-strips"])
    options = TickOptions(forecaster="window-max", target="local", forecast_margin=0.25)
    tick = forecast_load(settings, observe_load(settings, tick, options, print, now=now), options, print)
    assert tick["forecast"]["rps"] == pytest.approx(50.0) and tick["forecast"]["margin"] == 0.25


def test_an_unreachable_source_plans_for_the_last_known_load_with_a_margin(settings: Settings):
    now = int(time.time())
    counts(settings, 50, now)
    tick_until_decided(settings, now)
    # Two minutes later the router has written nothing: the file is stale.
    tick = tick_until_decided(settings, now + 120)
    assert tick["observation"]["fallback"] is True
    assert tick["forecast"]["rps"] == pytest.approx(50 * 1.2)


def test_with_no_load_ever_known_the_running_configuration_stays(settings: Settings):
    lines: list[str] = []
    tick = tick_until_decided(settings, int(time.time()), lines.append)
    assert tick["forecast"] is None and tick["plan"] is None and tick["steps"] == []
    target = InMemoryTarget()
    applied = apply_plan(settings, tick, OPTIONS, target, lines.append)
    assert applied["apply"]["status"] == "unchanged"
    assert target.read(pipelines_spec()) == {}


def pipelines_spec():
    from ipa_tasks.spec import load_spec, resolve_spec_path

    return load_spec(resolve_spec_path("digit-strips"))


def test_applying_twice_changes_nothing_the_second_time(settings: Settings):
    now = int(time.time())
    counts(settings, 40, now)
    target = InMemoryTarget()
    first = apply_plan(settings, tick_until_decided(settings, now, target=target), OPTIONS, target, print)
    assert first["apply"]["status"] == "applied"
    second = tick_until_decided(settings, now, target=target)
    assert second["steps"] == []
    assert apply_plan(settings, second, OPTIONS, target, print)["apply"]["status"] == "unchanged"


def test_a_target_that_cannot_be_read_is_an_error_of_the_tick_not_a_crash(settings: Settings):
    now = int(time.time())
    counts(settings, 40, now)

    class Unreadable(InMemoryTarget):
        def read(self, spec):
            raise TargetError("the target answered nonsense")

    tick = tick_until_decided(settings, now, target=Unreadable())
    assert tick["error"] == "decide: the target answered nonsense"
    assert apply_plan(settings, tick, OPTIONS, Unreadable(), print) == tick


def test_the_load_source_and_target_default_to_the_embedded_ones(settings: Settings, monkeypatch):
    monkeypatch.delenv("IPA_PROMETHEUS_URL", raising=False)
    assert load_source_config({}) == {"kind": "local"}
    monkeypatch.setenv("IPA_PROMETHEUS_URL", "http://127.0.0.1:9090")
    assert load_source_config({}) == {"kind": "prometheus", "url": "http://127.0.0.1:9090"}
    assert load_source_config({"kind": "local", "path": "x.csv"})["path"] == "x.csv"
    # The Variable comes before the environment, the param before both.
    assert load_source_config({}, '{"kind": "local"}') == {"kind": "local"}
    assert load_source_config({"kind": "trace", "t0": 1}, '{"kind": "local"}')["kind"] == "trace"
    with pytest.raises(ValueError, match="ipa_load_source is not JSON"):
        load_source_config({}, "{kind: local")
    with pytest.raises(ValueError, match="must be a JSON object"):
        load_source_config({}, '["local"]')
    # Without the connection, plans go to the local runtime, which says how to start it when it is down.
    local = make_target("auto", settings, lambda: False)
    with pytest.raises(TargetError, match=r"the local runtime is not running.*ipa_tasks\.serving\.runtime"):
        local.read(pipelines_spec())
    runtime = settings.home / "serving" / "runtime.json"
    runtime.parent.mkdir(parents=True)
    runtime.write_text('{"url": "http://127.0.0.1:1", "pid": 1, "pipelines": {}}')
    assert make_target("local", settings, lambda: False).name.startswith("local runtime at")
    runtime.unlink()
    assert make_target("auto", settings, lambda: True).name.startswith("kubernetes")
    with pytest.raises(ValueError, match="unknown target"):
        make_target("docker", settings, lambda: False)


def test_options_come_from_the_dag_params_and_ignore_the_rest():
    options = TickOptions.from_params({"policy": "rim", "dry_run": True, "pipelines": ["x"]})
    assert options.policy == "rim" and options.dry_run and math.isclose(options.fallback_margin, 0.2)


def test_a_planner_that_raises_is_an_error_of_the_tick(settings: Settings, monkeypatch):
    from ipa_tasks.optimizer.planner import Planner

    def refuses(*args, **kwargs):
        raise RuntimeError("Model too large for size-limited license")

    monkeypatch.setattr(Planner, "plan", refuses)
    now = int(time.time())
    counts(settings, 40, now)
    tick = tick_until_decided(settings, now)
    assert tick["error"] == "decide: RuntimeError: Model too large for size-limited license"


def test_a_last_known_load_too_old_is_not_planned_for(settings: Settings):
    now = int(time.time())
    counts(settings, 50, now)
    tick_until_decided(settings, now)
    lines: list[str] = []
    tick = tick_until_decided(settings, now + 901, lines.append)  # the file is stale, the load 15 min old
    assert tick["forecast"] is None and tick["plan"] is None
    assert any("too old to plan for" in line for line in lines)


def test_a_fallback_is_not_given_the_forecast_margin_on_top_of_its_own(settings: Settings):
    now = int(time.time())
    counts(settings, 50, now)
    options = TickOptions(forecaster="window-max", target="local", forecast_margin=0.1)
    (tick,) = pipelines_to_adapt(["digit-strips"])
    observe_load(settings, tick, options, print, now=now)
    tick = forecast_load(settings, observe_load(settings, tick, options, print, now=now + 60), options, print)
    assert tick["observation"]["fallback"] and tick["forecast"]["rps"] == pytest.approx(50 * 1.2)


def test_a_trace_replay_without_t0_keeps_the_clock_of_its_first_tick(settings: Settings, tmp_path: Path):
    import gzip

    trace = tmp_path / "trace.csv.gz"
    with gzip.open(trace, "wt") as out:
        out.write("second,requests\n" + "".join(f"{s},{8 * s}\n" for s in range(2000)))
    options = TickOptions(
        forecaster="last-value", forecast_margin=0.0, load_source={"kind": "trace", "path": str(trace)}
    )
    (tick,) = pipelines_to_adapt(["digit-strips"])
    now = 1_800_000_000
    first = forecast_load(settings, observe_load(settings, tick, options, print, now=now), options, print)
    later = forecast_load(
        settings, observe_load(settings, tick, options, print, now=now + 30), options, print
    )
    # The replay started history_s before the first tick: its last second is trace second 119, then 149.
    assert (first["forecast"]["rps"], later["forecast"]["rps"]) == (119, 149)


def test_the_same_pipeline_named_twice_is_refused():
    from ipa_tasks.spec import resolve_spec_path

    with pytest.raises(ValueError, match="are both pipeline 'digit-strips'"):
        pipelines_to_adapt(["digit-strips", str(resolve_spec_path("digit-strips"))])


def test_the_dry_run_variable_forces_a_dry_run_and_the_load_source_variable_is_kept():
    options = TickOptions.from_params({"dry_run": False}, dry_run_variable="Yes", load_source_variable="{}")
    assert options.dry_run and options.load_source_variable == "{}"
    assert not TickOptions.from_params({"dry_run": False}, dry_run_variable="false").dry_run


def test_scheduled_runs_adapt_the_pipelines_of_the_variable_and_a_trigger_its_own():
    default = ["digit-strips", "language-routing"]
    assert pipelines_chosen({}, "", default) == default
    assert pipelines_chosen({}, '["digit-strips"]', default) == ["digit-strips"]
    assert pipelines_chosen({"pipelines": ["language-routing"]}, '["digit-strips"]', default) == [
        "language-routing"
    ]
    with pytest.raises(ValueError, match="ipa_adapt_pipelines is not JSON"):
        pipelines_chosen({}, "[digit-strips", default)
    with pytest.raises(ValueError, match="non-empty JSON list"):
        pipelines_chosen({}, "[]", default)
