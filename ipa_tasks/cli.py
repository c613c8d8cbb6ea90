"""The ``ipa`` command: solve and inspect pipeline plans from the shell.

Every subcommand has ``--help``. Errors in inputs are printed as one line per problem (naming the file and
field) with exit status 2; nothing is written in that case.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from ipa_tasks.adaptation.choices import LOOP_POLICIES
from ipa_tasks.agent.commands import add_agent_parser, configured_model
from ipa_tasks.optimizer.plan import Plan
from ipa_tasks.optimizer.planner import DEFAULT_TIME_LIMIT_S, SOLVERS, Planner
from ipa_tasks.optimizer.policies import POLICIES
from ipa_tasks.profiles import ProfileError
from ipa_tasks.spec import SpecError, load_spec, resolve_spec_path, shipped_spec_paths

EXIT_INPUT_ERROR = 2
DEFAULT_SWEEP_LOADS = "1,5,10,20,40,80,160"


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _time_limit(text: str) -> float:
    value = _positive_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be > 0 seconds")
    return value


def _load_list(text: str) -> list[float]:
    return [_positive_float(part) for part in text.split(",") if part.strip()]


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def _console() -> Console:
    """A terminal keeps its width; piped output (logs, CI) gets room for a whole plan per row."""
    console = Console()
    return console if console.is_terminal else Console(width=200)


def _planner(spec: str, profiles: str | None) -> Planner:
    return Planner.from_files(resolve_spec_path(spec), profiles)


def _plan_table(plan: Plan, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in (
        "stage",
        "variant",
        "batch",
        "cores",
        "replicas",
        "latency s",
        "share of SLA",
        "capacity rps",
    ):
        table.add_column(column, justify="left" if column in ("stage", "variant") else "right")
    for s in plan.stages:
        table.add_row(
            s.stage,
            s.variant + (" *" if s.changed else ""),
            str(s.batch_size),
            str(s.cores),
            str(s.replicas),
            f"{s.latency_s:.3f}",
            f"{s.latency_s / plan.sla_s:.0%}",
            f"{s.capacity_rps:.1f}",
        )
    return table


def _print_plan(console: Console, plan: Plan) -> None:
    console.print(
        _plan_table(plan, f"{plan.pipeline} at {plan.load_rps:g} rps, policy {plan.policy} ({plan.status})")
    )
    console.print(
        f"end-to-end latency {plan.latency_s:.3f} s of SLA {plan.sla_s:g} s; "
        f"{plan.total_cores} cores; capacity {plan.capacity_rps:.1f} rps"
    )
    if plan.terms is not None:
        t = plan.terms
        console.print(
            f"objective {t.objective:.6g} = accuracy term {t.accuracy_term:.6g} "
            f"(pipeline accuracy {t.accuracy:.4f}) - cost {t.cost_term:.6g} - batch {t.batch_term:.3g} "
            f"- change {t.change_term:.6g}"
        )
    console.print(
        f"solver {plan.solver}: build {plan.build_time_s * 1000:.1f} ms, "
        f"solve {plan.solve_time_s * 1000:.1f} ms"
    )
    if any(s.changed for s in plan.stages):
        console.print("* variant or cores differ from the running configuration")
    if plan.degraded:
        console.print(f"[bold red]DEGRADED[/]: {plan.reason}")
    for note in plan.notes:
        console.print(f"note: {note}")


def cmd_solve(args: argparse.Namespace) -> int:
    planner = _planner(args.spec, args.profiles)
    current = Plan.load(args.current) if args.current else None
    plan = planner.plan(
        args.load, policy=args.policy, current=current, solver=args.solver, time_limit_s=args.time_limit
    )
    if args.json:
        print(plan.to_json())
    else:
        _print_plan(_console(), plan)
    return 0


def cmd_validate_spec(args: argparse.Namespace) -> int:
    failed = 0
    for file in args.files:
        try:
            spec = load_spec(resolve_spec_path(file))
        except SpecError as exc:
            failed += 1
            print(exc, file=sys.stderr)
            continue
        variants = sum(len(s.variants) for s in spec.stages)
        print(
            f"ok: {file}: pipeline {spec.name!r}, {len(spec.stages)} stages, {variants} variants, "
            f"SLA {spec.sla_s:g} s"
        )
    return EXIT_INPUT_ERROR if failed else 0


def cmd_sweep(args: argparse.Namespace) -> int:
    specs = [str(p) for p in shipped_spec_paths()] if args.all else args.spec
    if not specs:
        raise SpecError("name at least one --spec, or --all for the shipped pipelines")
    console = _console()
    records = []
    for spec in specs:
        planner = _planner(spec, args.profiles)
        table = Table(
            title=f"{planner.spec.name}: SLA {planner.spec.sla_s:g} s, policy {args.policy}",
            title_justify="left",
        )
        for column in (
            "load rps",
            "plan (variant/batch/cores x replicas per stage)",
            "latency s",
            "cores",
            "accuracy",
            "solver",
            "ms",
            "status",
        ):
            table.add_column(column, justify="left" if column.startswith("plan") else "right")
        previous = None
        for load in args.loads:
            plan = planner.plan(load, policy=args.policy, current=previous, solver=args.solver)
            previous = plan
            records.append(plan.to_dict())
            table.add_row(
                f"{load:g}",
                "  ".join(f"{s.variant}/b{s.batch_size}/c{s.cores}x{s.replicas}" for s in plan.stages),
                f"{plan.latency_s:.3f}",
                str(plan.total_cores),
                f"{plan.terms.accuracy:.4f}" if plan.terms else "-",
                plan.solver,
                f"{plan.decision_time_s * 1000:.1f}",
                "[red]degraded[/]" if plan.degraded else plan.status,
            )
        console.print(table)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(records, indent=2))
        console.print(f"wrote {len(records)} plans to {args.json_out}")
    return 0


def _name_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def cmd_build_variants(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from ipa_tasks.model_registry import build_and_register
    from ipa_tasks.settings import current_settings
    from ipa_tasks.variant_cache import demo_pipeline, ensure_built

    settings = current_settings()
    console = _console()
    pipeline = demo_pipeline(args.pipeline)
    spec = load_spec(resolve_spec_path(args.pipeline))
    try:
        selected = spec.select_variants(args.stages, args.variants)
    except KeyError as exc:
        raise SpecError(str(exc.args[0])) from None
    table = Table(title=f"{spec.name}: variants in {settings.variant_cache}", title_justify="left")
    for column in ("stage", "variant", "accuracy", "size MB", "build s", "cache", "registered"):
        table.add_column(column, justify="left" if column in ("stage", "variant", "cache") else "right")
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("building", total=len(selected))
        for stage, variant in selected:
            progress.update(task, description=f"{stage}/{variant}")
            if args.no_register:
                built, fresh = ensure_built(
                    settings.variant_cache, pipeline, stage, variant, console.log, rebuild=args.rebuild
                )
                registered = "-"
            else:
                built, fresh, entry = build_and_register(
                    settings, spec.name, stage, variant, console.log, rebuild=args.rebuild
                )
                registered = f"{entry.name} v{entry.version}"
            table.add_row(
                stage,
                variant,
                f"{built.accuracy:.4f}",
                f"{built.size_mb:.1f}",
                f"{built.build_seconds:.1f}",
                "built now" if fresh else "cached",
                registered,
            )
            progress.advance(task)
    console.print(table)
    if not args.no_register:
        console.print(f"MLflow registry: {settings.tracking_uri} (models '{spec.name}.<variant>')")
    return 0


def _replay_workload(args: argparse.Namespace) -> tuple[np.ndarray, str]:
    if args.window:
        from ipa_tasks.serving.load_generator import scaled_counts
        from ipa_tasks.simulation.windows import load_pattern

        workload, label = scaled_counts(load_pattern(args.window), args.scale), f"IPA's {args.window} window"
    else:
        from ipa_tasks.forecasting.trace_location import default_trace_path
        from ipa_tasks.serving.load_generator import trace_workload

        workload = trace_workload(default_trace_path(), args.start, args.seconds, scale=args.scale)
        label = f"trace seconds {args.start}+{args.seconds}"
    return workload, f"{label}, damped by 8, x{args.scale:g}"


def cmd_replay(args: argparse.Namespace) -> int:
    from ipa_tasks.settings import current_settings
    from ipa_tasks.simulation.replay import ReplayOptions, loop_forecasters, simulate, window_forecaster

    planner = _planner(args.spec, args.profiles)
    workload, label = _replay_workload(args)
    options = ReplayOptions(
        policy=args.policy,
        interval_s=args.interval,
        history_s=args.history,
        horizon_s=args.horizon,
        switch_s=args.switch_s,
        scale_out_s=args.scale_out_s,
        drop_limit_s=args.drop_limit_s,
        seed=args.seed,
        solver=args.solver,
    )
    notes: set[str] = set()
    loop = loop_forecasters(current_settings(), notes, args.margin)
    forecast = window_forecaster(
        args.forecaster,
        history_s=args.history,
        horizon_s=args.horizon,
        margin=args.margin,
        make=lambda name: loop(name, args.horizon),
    )
    choose = None
    if args.policy == "agent":
        from ipa_tasks.agent.policy import agent_choice

        model = configured_model("ipa replay: policy agent")
        if model is None:
            return EXIT_INPUT_ERROR
        choose = agent_choice(model, log=lambda line: print(line, file=sys.stderr))
    result = simulate(planner, planner.profile, workload, forecast, options, choose)
    for note in sorted(notes):
        print(note, file=sys.stderr)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        result.requests.to_csv(args.out / "requests.csv", index=False)
        result.intervals.to_csv(args.out / "intervals.csv", index=False)
        (args.out / "summary.json").write_text(json.dumps(result.summary, indent=2) + "\n")
    if args.json:
        print(json.dumps(result.summary, indent=2))
        return 0
    console = _console()
    how = f"policy {args.policy}, forecaster {args.forecaster}, every {args.interval} s"
    table = Table(title=f"{planner.spec.name}: {label}; {how}")
    for column in ("interval", "start s", "load rps", "forecast rps", "plan", "cores", "accuracy"):
        table.add_column(column)
    for row in result.intervals.to_dict("records"):
        table.add_row(
            str(row["interval"]),
            f"{row['start_s']:.0f}",
            f"{row['load_rps']:.1f}",
            f"{row['forecast_rps']:.1f}",
            row["configuration"] + (" (changed)" if row["changed"] else ""),
            str(row["total_cores"]),
            f"{row['accuracy']:.4f}",
        )
    console.print(table)
    summary = result.summary
    console.print(
        f"{summary['requests']} requests: {summary['dropped']} dropped, {summary['late']} late "
        f"(SLA {summary['sla_s']:g} s): {summary['violation_share']:.2%} violations "
        f"({summary['dropped_share']:.2%} counted as IPA did, dropped only); "
        f"p99 {summary['p99_latency_s']:.4f} s; "
        f"mean accuracy {summary['mean_accuracy']:.4f}; {summary['core_seconds']:.0f} core-seconds; "
        f"{summary['plan_changes']} plan changes in {summary['decisions']} decisions"
    )
    if args.out:
        console.print(f"requests.csv, intervals.csv and summary.json in {args.out}")
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from ipa_tasks.settings import current_settings
    from ipa_tasks.simulation.experiments import (
        cells,
        log_experiment,
        markdown,
        run_experiment,
        write_results,
    )
    from ipa_tasks.simulation.replay import loop_forecasters

    settings = current_settings()
    pipelines = args.pipelines or None
    notes: set[str] = set()
    make = loop_forecasters(settings, notes)
    console = _console()
    with Progress(console=console, transient=True) as progress:
        bar = progress.add_task(f"experiment {args.name}", total=len(cells(args.name, pipelines)))
        table = run_experiment(args.name, pipelines, make, lambda _: progress.advance(bar), seed=args.seed)
    for note in sorted(notes):
        console.print(f"[yellow]{note}[/yellow]")
    folder = args.out or settings.home / "experiments" / args.name
    written = write_results(args.name, table, folder)
    console.print(markdown(args.name, table))
    console.print(f"written: {', '.join(str(p) for p in written)}")
    if not args.no_mlflow:
        run_id = log_experiment(settings.tracking_uri, args.name, table, folder)
        console.print(f"MLflow: {settings.tracking_uri}, experiment ipa-replay-experiments, run {run_id}")
    return 0


def cmd_fidelity(args: argparse.Namespace) -> int:
    from ipa_tasks.simulation.fidelity import replay_demo_run, write_fidelity

    table, run = replay_demo_run(args.run)
    path = write_fidelity(args.run, table, run)
    console = _console()
    shown = Table("measure", "live", "simulated", "live - simulated", title=f"fidelity of {args.run.name}")
    for row in table.to_dict("records"):
        shown.add_row(
            row["measure"], f"{row['live']:.4g}", f"{row['simulated']:.4g}", f"{row['difference']:+.4g}"
        )
    console.print(shown)
    console.print(f"written: {path} and fidelity.csv")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ipa_tasks.demo.airflow_api import AirflowApiError
    from ipa_tasks.demo.run import Demo, DemoError, DemoOptions, ServiceError, print_result

    console = _console()
    options = DemoOptions(
        pipeline=args.pipeline,
        start=args.start,
        seconds=args.seconds,
        scale=args.scale,
        interval_s=args.interval,
        keep_up=args.keep_up,
        profile=not args.skip_profile,
        profile_conf=args.profile_conf or {},
        airflow_port=args.airflow_port,
        mlflow_port=args.mlflow_port,
        runtime_port=args.runtime_port,
        router_port_base=args.router_port_base,
        seed=args.seed,
    )

    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    # A kill or a closed terminal stops the services and pauses ipa_adapt as Ctrl-C does.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupted)
    try:
        result = Demo(options, console).run()
    except (DemoError, ServiceError, AirflowApiError, subprocess.CalledProcessError, OSError) as exc:
        console.print(f"[red]demo: error: {exc}[/red]")
        return 1
    except KeyboardInterrupt:
        console.print("[yellow]demo: interrupted; see above what was stopped[/yellow]")
        return 130
    print_result(console, result)
    return 0


def cmd_demo_stop(args: argparse.Namespace) -> int:
    from ipa_tasks.demo.run import stop_recorded_services
    from ipa_tasks.demo.services import ServiceError
    from ipa_tasks.settings import current_settings

    try:
        stopped = stop_recorded_services(current_settings().home)
    except ServiceError as exc:
        print(f"demo-stop: error: {exc}", file=sys.stderr)
        return 1
    print(f"stopped: {', '.join(stopped)}" if stopped else "no demo service was running")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ipa",
        description="Inference pipeline adaptation: pick variant, batch size, cores and replicas per stage.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens (to stderr)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    solve = sub.add_parser(
        "solve", help="plan one pipeline for one load", description="Plan one pipeline for one load."
    )
    solve.add_argument(
        "--spec", required=True, help="spec file, or the name of a shipped pipeline (e.g. video)"
    )
    solve.add_argument("--profiles", help="profile table (.csv or .parquet); default: the one the spec names")
    solve.add_argument("--load", required=True, type=_positive_float, help="predicted load in requests/s")
    solve.add_argument("--policy", choices=POLICIES, default="ipa", help="adaptation policy (default: ipa)")
    solve.add_argument("--current", help="JSON plan that runs now (enables the change penalty)")
    solve.add_argument(
        "--solver", choices=SOLVERS, default="auto", help="auto = Gurobi, HiGHS if Gurobi cannot"
    )
    solve.add_argument(
        "--time-limit",
        type=_time_limit,
        default=DEFAULT_TIME_LIMIT_S,
        help="solver time limit in seconds",
    )
    solve.add_argument("--json", action="store_true", help="print the plan as JSON")
    solve.set_defaults(func=cmd_solve)

    validate = sub.add_parser(
        "validate-spec",
        help="check pipeline spec files",
        description="Check pipeline spec files; exit 2 if any is invalid.",
    )
    validate.add_argument("files", nargs="+", help="spec files, or names of shipped pipelines")
    validate.set_defaults(func=cmd_validate_spec)

    sweep = sub.add_parser(
        "sweep",
        help="plan pipelines over a range of loads",
        description="Plan one or more pipelines over a range of loads and print the plans.",
    )
    group = sweep.add_mutually_exclusive_group(required=True)
    group.add_argument("--spec", action="append", help="spec file or shipped pipeline name (repeatable)")
    group.add_argument("--all", action="store_true", help="every shipped pipeline")
    sweep.add_argument("--profiles", help="profile table; default: the one each spec names")
    sweep.add_argument(
        "--loads",
        type=_load_list,
        default=_load_list(DEFAULT_SWEEP_LOADS),
        help=f"comma-separated rps (default {DEFAULT_SWEEP_LOADS})",
    )
    sweep.add_argument("--policy", choices=POLICIES, default="ipa")
    sweep.add_argument("--solver", choices=SOLVERS, default="auto")
    sweep.add_argument("--json-out", help="also write every plan to this JSON file")
    sweep.set_defaults(func=cmd_sweep)

    build = sub.add_parser(
        "build-variants",
        help="train or load a demo pipeline's model variants, cache them, register them in MLflow",
        description="Build the model variants of a demo pipeline (digit-strips, language-routing) into "
        "$IPA_HOME/variants (default ~/.ipa), skipping those already built by the current recipe, and "
        "register each build in the MLflow model registry at $MLFLOW_TRACKING_URI (default: SQLite in "
        "$IPA_HOME) as model '<pipeline>.<variant>' with its held-out accuracy.",
    )
    build.add_argument("pipeline", help="demo pipeline: digit-strips or language-routing")
    build.add_argument("--stages", type=_name_list, help="comma-separated stages (default: all)")
    build.add_argument("--variants", type=_name_list, help="comma-separated variants (default: all)")
    build.add_argument("--rebuild", action="store_true", help="build again even if cached")
    build.add_argument("--no-register", action="store_true", help="do not log to the MLflow registry")
    build.set_defaults(func=cmd_build_variants)

    from ipa_tasks.forecasting.names import FORECASTERS
    from ipa_tasks.simulation.windows import PATTERNS

    replay = sub.add_parser(
        "replay",
        help="simulate a policy on a load window: what it would have done, in seconds",
        description="Replay a load window (one of IPA's four, or a window of the Twitter trace) through a "
        "simulation of the pipeline served as its profile says, adapted every --interval seconds by the "
        "policy with the forecaster; print every decision and the SLA violations, p99, accuracy and cost.",
    )
    replay.add_argument("--spec", required=True, help="spec file or shipped pipeline name")
    replay.add_argument("--profiles", help="profile table; default: the one the spec names")
    replay.add_argument("--window", choices=PATTERNS, help="one of IPA's 20-minute windows")
    replay.add_argument("--start", type=int, default=1_301_160, help="first trace second (without --window)")
    replay.add_argument("--seconds", type=int, default=1200, help="seconds of trace (without --window)")
    replay.add_argument(
        "--scale", type=_positive_float, default=1.0, help="multiplies the load (damped by 8)"
    )
    replay.add_argument(
        "--policy",
        choices=LOOP_POLICIES,
        default="ipa",
        help="ipa, a baseline, or agent (an LLM agent's plans, checked by the MILP; needs IPA_AGENT_MODEL)",
    )
    replay.add_argument("--solver", choices=SOLVERS, default="auto")
    replay.add_argument(
        "--forecaster", choices=(*FORECASTERS, "oracle"), default="window-max", help="oracle: the true peak"
    )
    replay.add_argument("--margin", type=float, default=0.1, help="added to every forecast (default 0.1)")
    replay.add_argument("--interval", type=int, default=30, help="seconds between decisions (default 30)")
    replay.add_argument("--history", type=int, default=120, help="seconds the forecaster sees")
    replay.add_argument("--horizon", type=int, default=40, help="seconds forecast ahead")
    replay.add_argument("--switch-s", type=float, default=10.0, help="time a variant switch takes to land")
    replay.add_argument("--scale-out-s", type=float, default=5.0, help="time added replicas take to land")
    replay.add_argument("--drop-limit-s", type=float, default=10.0, help="requests this old are dropped")
    replay.add_argument("--seed", type=int, default=0)
    replay.add_argument("--out", type=Path, help="write requests.csv, intervals.csv and summary.json here")
    replay.add_argument("--json", action="store_true", help="print the summary as JSON")
    replay.set_defaults(func=cmd_replay)

    from ipa_tasks.simulation.names import EXPERIMENTS

    experiment = sub.add_parser(
        "experiment",
        help="run one of the paper's experiments on the replay simulator",
        description="Run an experiment on the replay simulator: e2e (windows x policies), preferences "
        "(objective weights), predictors (forecasters) or intervals (10/30/60/120 s), on IPA's five "
        "pipelines and the two demo pipelines; write results.csv, results.md and plots, and log to MLflow.",
    )
    experiment.add_argument("name", choices=EXPERIMENTS)
    experiment.add_argument("--pipelines", type=_name_list, help="comma-separated (default: all seven)")
    experiment.add_argument("--out", type=Path, help="results folder (default $IPA_HOME/experiments/<name>)")
    experiment.add_argument("--seed", type=int, default=0)
    experiment.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    experiment.set_defaults(func=cmd_experiment)

    fidelity = sub.add_parser(
        "fidelity",
        help="compare a demo run with the replay simulator on the same window and profile",
        description="Replay what an ipa demo run served (its folder in $IPA_HOME/demo/runs/) in the "
        "simulator with the same pipeline, profile, load window, interval and forecaster, and print live vs "
        "simulated throughput, p50/p99 latency, SLA violations, plan changes and accuracy (also written "
        "there as fidelity.md and fidelity.csv).",
    )
    fidelity.add_argument("run", type=Path, help="a demo run's folder")
    fidelity.set_defaults(func=cmd_fidelity)

    from ipa_tasks.demo.run import DEFAULT_SCALE, DEFAULT_SECONDS, DEFAULT_START
    from ipa_tasks.serving.locations import ROUTER_PORT_BASE, RUNTIME_PORT

    demo = sub.add_parser(
        "demo",
        help="the end-to-end demo: Airflow, MLflow, profiling, serving and adaptation under a replayed load",
        description="Start MLflow and Airflow on 127.0.0.1, build and profile a demo pipeline, serve it on "
        "this machine, replay a window of the Twitter trace onto it while ipa_adapt adapts it every 30 s, "
        "and write a report (table and plots) to $IPA_HOME/demo/runs/<time>/. About 12 minutes the first "
        "time (building the variants), 8 afterwards.",
    )
    demo.add_argument("--pipeline", default="digit-strips", help="digit-strips (default) or language-routing")
    demo.add_argument("--start", type=int, default=DEFAULT_START, help="first second of the trace window")
    demo.add_argument("--seconds", type=int, default=DEFAULT_SECONDS, help="seconds of load to replay")
    demo.add_argument("--scale", type=float, default=DEFAULT_SCALE, help="multiplies the trace (damped by 8)")
    demo.add_argument("--interval", type=int, default=30, help="seconds between ipa_adapt runs (default 30)")
    demo.add_argument("--keep-up", action="store_true", help="leave the services running afterwards")
    demo.add_argument("--skip-profile", action="store_true", help="plan with the published profile")
    demo.add_argument(
        "--profile-conf",
        type=_json_object,
        help="extra ipa_profile params as JSON, e.g. '{\"repetitions\": 20}'",
    )
    demo.add_argument("--airflow-port", type=int, default=8080)
    demo.add_argument("--mlflow-port", type=int, default=5000)
    demo.add_argument("--runtime-port", type=int, default=RUNTIME_PORT, help="the runtime's admin API")
    demo.add_argument("--router-port-base", type=int, default=ROUTER_PORT_BASE, help="the pipeline's router")
    demo.add_argument("--seed", type=int, default=0, help="of the arrival times")
    demo.set_defaults(func=cmd_demo)

    demo_stop = sub.add_parser(
        "demo-stop",
        help="stop the services a demo left running (--keep-up)",
        description="Stop the services recorded in $IPA_HOME/demo/services.json that still run.",
    )
    demo_stop.set_defaults(func=cmd_demo_stop)
    add_agent_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return args.func(args)
    except (SpecError, ProfileError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT_ERROR


if __name__ == "__main__":
    sys.exit(main())
