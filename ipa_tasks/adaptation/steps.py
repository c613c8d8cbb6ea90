"""The steps of one adaptation tick of one pipeline, as the ``ipa_adapt`` DAG's tasks run them.

Each step takes the tick so far (a JSON-safe dict that travels through XCom) and returns it with its own
part added, and says in plain words what it saw and did. A step that cannot do its part (a target that
cannot be read, a pipeline without a profile) adds an ``error`` and the later steps pass the tick on
untouched, so the record step still records the tick and then fails it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

# Only light modules here: each step runs in a task process of its own, every 30 s, and imports what it
# alone needs (the optimizer, pandas, MLflow, torch and the Kubernetes client cost seconds together).
from ipa_tasks.actuation.config import config_from_dict, config_of, config_to_dict, plan_steps
from ipa_tasks.actuation.target import ApplyReport, Target, TargetError, apply_change
from ipa_tasks.adaptation.choices import TARGETS
from ipa_tasks.adaptation.state import read_state, write_state
from ipa_tasks.kubernetes_connection import KUBERNETES_CONNECTION
from ipa_tasks.optimizer.plan import Plan
from ipa_tasks.settings import Settings
from ipa_tasks.spec import SpecError, load_spec, resolve_spec_path

Log = Callable[[str], object]
Tick = dict[str, Any]
PROMETHEUS_URL_VARIABLE = "IPA_PROMETHEUS_URL"
LOAD_SOURCE_VARIABLE = "ipa_load_source"
PIPELINES_VARIABLE = "ipa_adapt_pipelines"
CHAMPION_RECHECK_S = 300.0
"""How long a tick trusts the registered forecaster it last looked up before asking MLflow again."""


@dataclass(frozen=True)
class TickOptions:
    """How a tick observes, forecasts, solves and applies (the DAG's params)."""

    policy: str = "ipa"
    solver: str = "auto"
    forecaster: str = "lstm"
    history_s: int = 120
    """Seconds of load history the forecaster sees (IPA: 2 minutes)."""
    horizon_s: int = 40
    """The forecast covers the adaptation interval plus the time a change takes to land."""
    forecast_margin: float = 0.1
    """Added to every forecast: the LSTM forecasts the expected peak, so without a margin it falls short of
    the actual peak in 43 % of the held-out windows (``docs/adaptation.md``)."""
    fallback_margin: float = 0.2
    """Added to the last known load when the load cannot be observed (the forecast margin is not added
    on top of it)."""
    fallback_max_age_s: float = 900.0
    """A last known load older than this is not planned for: the tick keeps what runs instead."""
    load_source: dict[str, Any] = field(default_factory=dict)
    """``monitoring.source_from_config`` settings; empty: the Airflow Variable ``ipa_load_source`` (the same
    settings as JSON) if set, else Prometheus if IPA_PROMETHEUS_URL is set, else the local runtime's
    request counts."""
    load_source_variable: str = ""
    """The Variable's text, read by the DAG."""
    target: str = "auto"
    dry_run: bool = False
    ready_timeout_s: float = 15.0

    @classmethod
    def from_params(
        cls, params: Mapping[str, Any], *, dry_run_variable: str = "", load_source_variable: str = ""
    ) -> TickOptions:
        """From the DAG's params and the Variables ``ipa_adapt_dry_run`` (true/1/yes forces a dry run)
        and ``ipa_load_source`` (the default load source, JSON)."""
        known = {f.name for f in fields(cls)}
        options = cls(**{k: v for k, v in params.items() if k in known})
        forced = dry_run_variable.strip().lower() in ("true", "1", "yes", "on")
        return replace(options, dry_run=options.dry_run or forced, load_source_variable=load_source_variable)


def pipelines_chosen(conf: Mapping[str, Any], variable: str, default: list[str]) -> list[str]:
    """Which pipelines a run adapts: the trigger's ``pipelines``, else the Variable ``ipa_adapt_pipelines``
    (a JSON list, for the scheduled runs, which take no conf), else the param's default."""
    if conf.get("pipelines"):
        return list(conf["pipelines"])
    if not variable.strip():
        return list(default)
    try:
        data = json.loads(variable)
    except ValueError as exc:
        raise ValueError(f"the Airflow Variable {PIPELINES_VARIABLE} is not JSON: {exc}") from None
    if not isinstance(data, list) or not data or not all(isinstance(x, str) and x for x in data):
        raise ValueError(
            f"the Airflow Variable {PIPELINES_VARIABLE} must be a non-empty JSON list of spec names or "
            f"files, got {variable.strip()[:200]}"
        )
    return data


def pipelines_to_adapt(spec_refs: list[str]) -> list[Tick]:
    """One tick per pipeline (spec name or file); a broken spec stops the run here, naming file and field,
    and so do two references to one pipeline (two ticks would change the same stages at once)."""
    ticks: dict[str, Tick] = {}
    for ref in spec_refs:
        path = resolve_spec_path(ref)
        spec = load_spec(path)
        if spec.name in ticks:
            first = ticks[spec.name]["spec"]
            raise ValueError(f"{ref} and {first} are both pipeline {spec.name!r}; name it once")
        ticks[spec.name] = {"pipeline": spec.name, "spec": str(path.resolve())}
    return list(ticks.values())


def load_source_config(configured: Mapping[str, Any], variable: str = "") -> dict[str, Any]:
    """The load source's settings: the param, else the Variable, else the environment (``TickOptions``)."""
    if configured:
        return dict(configured)
    if variable.strip():
        try:
            data = json.loads(variable)
        except ValueError as exc:
            raise ValueError(f"the Airflow Variable {LOAD_SOURCE_VARIABLE} is not JSON: {exc}") from None
        if not isinstance(data, dict):
            variable_name = f"the Airflow Variable {LOAD_SOURCE_VARIABLE}"
            raise ValueError(f"{variable_name} must be a JSON object, got {data!r}")
        return data
    url = os.environ.get(PROMETHEUS_URL_VARIABLE)
    return {"kind": "prometheus", "url": url} if url else {"kind": "local"}


def observe_load(
    settings: Settings, tick: Tick, options: TickOptions, log: Log, now: float | None = None
) -> Tick:
    from ipa_tasks.monitoring import observe, source_from_config

    start = time.perf_counter()
    now = time.time() if now is None else now
    pipeline = tick["pipeline"]
    state = read_state(settings.home, pipeline)
    try:
        config = load_source_config(options.load_source, options.load_source_variable)
        if config.get("kind") == "trace" and "t0" not in config:
            # A replay started from the UI or a Variable has no clock of its own: it starts at its first tick.
            if state.replay_t0 is None:
                state = replace(state, replay_t0=now - options.history_s)
                write_state(settings.home, pipeline, state)
            config["t0"] = state.replay_t0
        source = source_from_config(config, pipeline, settings.home)
    except ValueError as exc:
        log(f"cannot observe: {exc}")
        return {**tick, "error": f"observe: {exc}"}
    last_known = state.last_known_rps
    if last_known is not None and now - (state.observed_at or 0.0) > options.fallback_max_age_s:
        age = now - (state.observed_at or 0.0)
        log(f"the last observed load ({last_known:.2f} requests/s) is {age:.0f} s old: too old to plan for")
        last_known = None
    observation = observe(
        source, options.history_s, last_known_rps=last_known, margin=options.fallback_margin, now=now
    )
    log(observation.message)
    if not observation.fallback and len(observation.rates):
        state = replace(state, last_known_rps=float(observation.rates.max()), observed_at=now)
        write_state(settings.home, pipeline, state)
    return {**tick, "observation": observation.to_dict(), "observe_s": time.perf_counter() - start}


def forecast_load(settings: Settings, tick: Tick, options: TickOptions, log: Log) -> Tick:
    from ipa_tasks.forecasting.registry import default_cache_dir, forecaster_by_name
    from ipa_tasks.monitoring import LoadObservation

    if "error" in tick:
        return tick
    start = time.perf_counter()
    observation = LoadObservation.from_dict(tick["observation"])
    if len(observation.rates) == 0:
        log("no load is known, so there is nothing to forecast: the running configuration stays")
        return {**tick, "forecast": None, "forecast_s": time.perf_counter() - start}
    # A fallback already carries its own margin.
    margin = 0.0 if observation.fallback else options.forecast_margin
    forecaster, note = forecaster_by_name(
        options.forecaster,
        horizon_s=options.horizon_s,
        tracking_uri=settings.tracking_uri,
        cache_dir=default_cache_dir(settings),
        margin=margin,
        recheck_s=CHAMPION_RECHECK_S,
    )
    if note:
        log(note)
    rps = float(forecaster.predict(observation.rates))
    log(
        f"forecast: peak {rps:.2f} requests/s over the next {options.horizon_s} s ({forecaster.name}, "
        f"margin {margin:.0%}; the last {len(observation.rates)} s peaked at "
        f"{observation.rates.max():.2f})"
    )
    # The rates are spent: later steps (and their XCom and logs) carry only what the record needs.
    summary = {**tick["observation"], "rates": [], "last_rps": float(observation.rates[-1])}
    summary["peak_rps"] = float(observation.rates.max())
    forecast = {
        "rps": rps,
        "forecaster": forecaster.name,
        "note": note,
        "horizon_s": options.horizon_s,
        "margin": margin,
    }
    return {**tick, "observation": summary, "forecast": forecast, "forecast_s": time.perf_counter() - start}


def make_target(
    kind: str,
    settings: Settings,
    connection_exists: Callable[[], bool],
    environ: Mapping[str, str] = os.environ,
) -> Target:
    """``auto`` is Kubernetes when the ``ipa_kubernetes`` connection exists, else the fixed stage servers
    when ``IPA_STAGE_URL_TEMPLATE`` says where they are (docker-compose), else the local target: the
    local serving runtime's replicas (``make serve``, or ``make demo``), found through its
    ``runtime.json``; when it does not run, reading the target fails and says how to start it."""
    from ipa_tasks.actuation.stage_servers import URL_TEMPLATE_VARIABLE, target_from_environment

    if kind not in TARGETS:
        raise ValueError(f"unknown target {kind!r}; choose one of {', '.join(TARGETS)}")
    if kind == "kubernetes" or (kind == "auto" and connection_exists()):
        from ipa_tasks.actuation.kubernetes import KubernetesTarget

        return KubernetesTarget(KUBERNETES_CONNECTION)
    if kind == "stage-servers" or (kind == "auto" and environ.get(URL_TEMPLATE_VARIABLE)):
        return target_from_environment(environ)
    from ipa_tasks.actuation.local_runtime import LocalRuntimeTarget

    return LocalRuntimeTarget(settings.home)


def decide(settings: Settings, tick: Tick, options: TickOptions, target: Target, log: Log) -> Tick:
    """Solve for the forecast load and diff the plan against what runs."""
    from ipa_tasks.adaptation.planning import planner_for, running_plan
    from ipa_tasks.profiles import ProfileError

    if "error" in tick:
        return tick
    start = time.perf_counter()
    try:
        planner, profile_source = planner_for(tick["spec"], settings.profile_store)
        running = target.read(planner.spec)
    except Exception as exc:  # a broken spec or profile, an unreadable target: recorded, and the run fails
        reason = str(exc) if isinstance(exc, SpecError | ProfileError | TargetError) else _named(exc)
        log(f"cannot plan: {reason}")
        return {**tick, "error": f"decide: {reason}"}
    decided = {**tick, "target": target.name, "running": config_to_dict(running)}
    if tick.get("forecast") is None:
        return {**decided, "plan": None, "steps": [], "decide_s": time.perf_counter() - start}
    try:
        current = running_plan(planner.spec, running)
        if options.policy == "agent":
            from ipa_tasks.agent.policy import agent_tick_plan

            plan = agent_tick_plan(
                planner,
                tick["forecast"]["rps"],
                current,
                observation=tick.get("observation"),
                forecaster=tick["forecast"].get("forecaster", ""),
                home=settings.home,
                tracking_uri=settings.tracking_uri,
                log=log,
            )
        else:
            plan = planner.plan(
                tick["forecast"]["rps"],
                options.policy,
                current=current,
                solver=options.solver,  # type: ignore[arg-type]
            )
    except Exception as exc:  # e.g. the chosen solver refuses the model: recorded, and the run fails
        log(f"cannot plan: {_named(exc)}")
        return {**decided, "error": f"decide: {_named(exc)}"}
    steps = plan_steps(running, config_of(plan))
    log(f"planned from the {profile_source}")
    log(describe_plan(plan))
    if steps:
        log(f"{len(steps)} step(s) from what runs on {target.name}:")
        for step in steps:
            log(f"  {step.describe()}")
    else:
        log(f"the plan is what runs on {target.name}: nothing to change")
    return {
        **decided,
        "plan": plan.to_dict(),
        "profile_source": profile_source,
        "steps": [s.to_dict() for s in steps],
        "decide_s": time.perf_counter() - start,
    }


def _named(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def describe_plan(plan: Plan) -> str:
    """One paragraph: what each stage runs, the objective terms, the solver, and why if degraded."""
    stages = "; ".join(
        f"{s.stage} {s.variant} batch {s.batch_size} x{s.replicas} ({s.cores} core(s)), {s.latency_s:.3f} s"
        for s in plan.stages
    )
    text = f"plan at {plan.load_rps:.2f} requests/s ({plan.policy}, {plan.status}): {stages}"
    text += f"; end to end {plan.latency_s:.3f} s of SLA {plan.sla_s:g} s, {plan.total_cores} cores"
    if plan.terms is not None:
        t = plan.terms
        text += (
            f"; objective {t.objective:.4g} = accuracy term {t.accuracy_term:.4g} (pipeline accuracy "
            f"{t.accuracy:.4f}) - cost {t.cost_term:.4g} - batch {t.batch_term:.3g} "
            f"- change {t.change_term:.3g}"
        )
    text += f"; solver {plan.solver} in {plan.decision_time_s * 1000:.1f} ms"
    if plan.degraded:
        text += f". DEGRADED: {plan.reason}"
    for note in plan.notes:
        text += f". Note: {note}"
    return text


def apply_plan(settings: Settings, tick: Tick, options: TickOptions, target: Target, log: Log) -> Tick:
    """Apply the decided plan (unless dry run), verify it, and say what runs afterwards."""
    if "error" in tick:
        return tick
    if tick.get("plan") is None:
        report = ApplyReport("unchanged", (), message="no plan this tick: nothing applied")
        return {**tick, "apply": report.to_dict()}
    try:
        spec = load_spec(tick["spec"])
        desired = config_of(Plan.from_dict(tick["plan"]))
        running = target.read(spec)
    except Exception as exc:  # nothing was written yet: recorded, and the run fails
        reason = str(exc) if isinstance(exc, SpecError | TargetError) else _named(exc)
        log(f"cannot read {target.name} before applying, nothing was changed: {reason}")
        return {**tick, "error": f"apply: {reason}"}
    if running != config_from_dict(tick["running"]):
        log(f"what runs changed since the plan was made; applying the plan against {config_to_dict(running)}")
    report = apply_change(
        target,
        spec,
        running,
        desired,
        dry_run=options.dry_run,
        ready_timeout_s=options.ready_timeout_s,
        log=log,
    )
    if report.status == "unchanged":
        log("nothing to change: no write to the target")
    tick = {**tick, "apply": report.to_dict(), "dry_run": options.dry_run}
    if report.status in ("rolled_back", "inconsistent"):
        tick["error"] = f"apply: {report.message}"
    return tick
