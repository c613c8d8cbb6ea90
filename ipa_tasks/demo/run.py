"""The one-command demo (``ipa demo``, ``make demo``): the embedded default adapting a real pipeline.

What, in order (each step says what it does; the long ones show progress):

1. ``airflow db migrate`` (SQLite in ``AIRFLOW_HOME``);
2. an MLflow server on loopback (SQLite ``<IPA_HOME>/mlflow.db``, artifacts in ``<IPA_HOME>/mlartifacts``,
   job execution off) and Airflow's api-server, scheduler and dag-processor on loopback (LocalExecutor),
   every task logging to that server;
3. the pipeline's variants built (cached after the first time) and one ``ipa_profile`` round
   (``airflow dags test``: a real run in Airflow's database, not a scheduled one, because unpausing the
   weekly DAG would also start its catch-up run of both pipelines);
4. the local serving runtime (router + one stage-server process per replica), deployed once with the plan
   for the window's first minute, as an operator's first install would;
5. ``ipa_adapt`` unpaused (every ``interval_s``; the Variable ``ipa_adapt_pipelines`` limits it to the
   demo's pipeline, ``ipa_load_source`` = local, ``ipa_adapt_dry_run`` = false) while the load generator
   replays a window of the Twitter trace onto the router and each decision is printed as it is recorded;
6. ``ipa_adapt`` paused again, its last run awaited, and the report written (``report.md``, the interval
   table as CSV, three plots) into ``<IPA_HOME>/demo/runs/<time>/`` and logged to MLflow (experiment
   ``ipa-demo``);
7. every service stopped, or with ``keep_up`` left running (``ipa demo-stop`` stops them later).

Why this order: the profile must be published before the runtime's first plan, and the runtime must serve
before ``ipa_adapt`` runs, or its first ticks would see nothing to adapt.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ipa_tasks.atomic_files import atomic_write_text
from ipa_tasks.demo.airflow_api import AirflowApi, AirflowApiError
from ipa_tasks.demo.services import (
    Service,
    ServiceError,
    answers,
    is_running,
    read_services,
    services_file,
    start_service,
    stop_services,
    wait_until,
    write_services,
)
from ipa_tasks.serving.locations import ROUTER_PORT_BASE, RUNTIME_PORT, runtime_file
from ipa_tasks.settings import Settings, current_settings
from ipa_tasks.spec import PipelineSpec, load_spec, resolve_spec_path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DEMO_EXPERIMENT = "ipa-demo"
# Two quiet minutes (15-20 requests/s at x3), then the load rises five- to six-fold (80-120/s) and stays up
# (Twitter trace, damped by 8). x3 keeps the peak where this 2-core machine still serves the demo pipeline
# beside Airflow and MLflow: every request costs about 10 ms of CPU across the router and the stage servers.
DEFAULT_START, DEFAULT_SECONDS, DEFAULT_SCALE = 1_862_970, 360, 3.0
RUN_FILE, RUN_PROFILE = "demo.json", "profile.csv"
PIPELINES_VARIABLE = "ipa_adapt_pipelines"
DEMO_VARIABLES = (PIPELINES_VARIABLE, "ipa_load_source", "ipa_adapt_dry_run")
START_TIMEOUT_S = 180.0
ADAPT_DAG, PROFILE_DAG = "ipa_adapt", "ipa_profile"


class DemoError(RuntimeError):
    """The demo cannot go on; the message says why and where to look."""


@dataclass(frozen=True)
class DemoOptions:
    pipeline: str = "digit-strips"
    start: int = DEFAULT_START
    seconds: int = DEFAULT_SECONDS
    scale: float = DEFAULT_SCALE
    interval_s: int = 30
    keep_up: bool = False
    profile: bool = True
    profile_conf: Mapping[str, Any] = field(default_factory=dict)
    airflow_port: int = 8080
    mlflow_port: int = 5000
    runtime_port: int = RUNTIME_PORT
    router_port_base: int = ROUTER_PORT_BASE
    seed: int = 0


@dataclass(frozen=True)
class DemoResult:
    folder: Path
    report: Path
    summary: Mapping[str, Any]
    table: Any
    mlflow_run_id: str
    airflow_url: str
    mlflow_url: str
    login: str
    kept_up: bool


# --- pure parts -------------------------------------------------------------------------------------------


def airflow_environment(
    base: Mapping[str, str],
    *,
    settings: Settings,
    airflow_home: Path,
    port: int,
    tracking_uri: str,
    interval_s: int,
    jwt_secret: str,
) -> dict[str, str]:
    """The environment of every Airflow component (and so of every task): loopback, SQLite, this
    repository's DAGs, the shared IPA_HOME and MLflow server. The caller's DAGs folder and users stay."""
    env = {
        **base,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        # The api-server signs the tasks' tokens and the scheduler's workers check them: one secret for all.
        "AIRFLOW__API_AUTH__JWT_SECRET": jwt_secret,
        "IPA_HOME": str(settings.home),
        "MLFLOW_TRACKING_URI": tracking_uri,
        "IPA_ADAPT_INTERVAL_S": str(interval_s),
        "PATH": f"{BIN}{os.pathsep}{base.get('PATH', '')}",
        "GX_ANALYTICS_ENABLED": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    env.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO / "dags"))
    env.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(REPO / "plugins"))
    env.setdefault("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin")
    # A Kubernetes connection would send the demo's plans to a cluster instead of the local runtime.
    env.pop("AIRFLOW_CONN_IPA_KUBERNETES", None)
    return env


def airflow_login(env: Mapping[str, str]) -> tuple[str, str]:
    """(username, password) of the first configured user, the password as the api-server generated it;
    ("", "") when every user is an admin (no login)."""
    if env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "").lower() == "true":
        return "", ""
    username = env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin").split(",")[0].split(":")[0]
    default = Path(env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated"
    path = Path(env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE") or default)
    try:
        passwords = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return username, ""
    return username, str(passwords.get(username, ""))


def initial_load(workload: Sequence[int], seconds: int = 60, margin: float = 0.1) -> float:
    """The load the first deployment is planned for: the peak of the window's first minute, plus a margin."""
    head = list(workload[:seconds]) or [0]
    return max(1.0, max(head) * (1 + margin))


def decisions_between(home: Path, pipeline: str, start: datetime, end: datetime) -> Any:
    """The pipeline's recorded decisions from ``start`` to ``end`` (the day tables they fall in)."""
    import pandas as pd

    from ipa_tasks.adaptation.decisions import day_table_path, read_decisions

    days = pd.date_range(start.date(), end.date(), freq="D")
    tables = [
        read_decisions(path)
        for day in days
        if (path := day_table_path(home, pipeline, day.strftime("%Y-%m-%d"))).exists()
    ]
    if not tables:
        return pd.DataFrame(columns=["time"])
    table = pd.concat(tables, ignore_index=True)
    times = pd.to_datetime(table["time"], utc=True)
    return table[(times >= pd.Timestamp(start)) & (times <= pd.Timestamp(end))].reset_index(drop=True)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


# --- the run ----------------------------------------------------------------------------------------------


class Demo:
    """One demo run: starts the services, drives them, reports, stops them (see the module docstring)."""

    def __init__(self, options: DemoOptions, console: Console, settings: Settings | None = None) -> None:
        self.options = options
        self.console = console
        self.settings = settings or current_settings()
        self.spec_path = resolve_spec_path(options.pipeline).resolve()
        self.spec = load_spec(self.spec_path)
        self.started_at = datetime.now(UTC)
        stamp = self.started_at.strftime("%Y%m%dT%H%M%SZ")
        self.folder = self.settings.home / "demo" / "runs" / stamp
        self.logs = self.folder / "logs"
        self.services: list[Service] = []
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.airflow_url = f"http://127.0.0.1:{options.airflow_port}"
        self.mlflow_url = f"http://127.0.0.1:{options.mlflow_port}"
        airflow_home = Path(os.environ.get("AIRFLOW_HOME") or Path.home() / "airflow").resolve()
        self.env = airflow_environment(
            os.environ,
            settings=self.settings,
            airflow_home=airflow_home,
            port=options.airflow_port,
            tracking_uri=self.mlflow_url,
            interval_s=options.interval_s,
            jwt_secret=secrets.token_urlsafe(48),
        )
        self.api: AirflowApi | None = None
        self.adapting = False
        self.saved_variables: dict[str, str | None] = {}
        self.steps = 7
        self.step = 0

    # --- helpers ---

    def say(self, text: str) -> None:
        self.step += 1
        self.console.print(f"[bold]\\[{self.step}/{self.steps}][/bold] {text}")

    def note(self, text: str) -> None:
        self.console.print(f"      {text}")

    def _start(self, name: str, argv: Sequence[str], env: Mapping[str, str], url: str = "") -> Service:
        service, process = start_service(name, argv, env, self.logs / f"{name}.log", url)
        self.services.append(service)
        self.processes[name] = process
        write_services(self.settings.home, self.services)
        return service

    # --- steps ---

    def check_nothing_runs(self) -> None:
        left = [s for s in read_services(self.settings.home) if is_running(s)]
        if left:
            names = ", ".join(f"{s.name} (pid {s.pid})" for s in left)
            raise DemoError(
                f"a previous demo's services are still up: {names}; stop them with `make demo-stop` "
                f"(or `ipa demo-stop`), see {services_file(self.settings.home)}"
            )
        if runtime_file(self.settings.home).exists():
            from ipa_tasks.serving.runtime import already_running

            url = already_running(runtime_file(self.settings.home))
            if url:
                raise DemoError(f"a serving runtime already runs at {url} (make serve?); stop it first")
        wanted = {
            "Airflow's api-server": self.options.airflow_port,
            "the MLflow server": self.options.mlflow_port,
            "the runtime's admin API": self.options.runtime_port,
            "the router": self.options.router_port_base,
            "the scheduler's log server": int(
                self.env.get("AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT", "8793")
            ),
        }
        taken = [f"{what} needs port {port}" for what, port in wanted.items() if not port_is_free(port)]
        if taken:
            raise DemoError(
                f"port(s) in use on 127.0.0.1: {'; '.join(taken)}. Free them, or choose others (ipa demo "
                "--help; the log server's is AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT)."
            )

    def start_services(self) -> None:
        self.say("starting MLflow and Airflow (api-server, scheduler, dag-processor) on 127.0.0.1")
        migrate_log = self.logs / "airflow-db-migrate.log"
        with migrate_log.open("wb") as output:
            done = subprocess.run(
                [str(BIN / "airflow"), "db", "migrate"], env=self.env, stdout=output, stderr=subprocess.STDOUT
            )
        if done.returncode != 0:
            raise DemoError(f"airflow db migrate failed (exit {done.returncode}); see {migrate_log}")
        home = self.settings.home
        mlflow_env = {**self.env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        mlflow = self._start(
            "mlflow-server",
            [
                *(
                    str(BIN / "mlflow"),
                    "server",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.options.mlflow_port),
                ),
                *("--workers", "1", "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}"),
                *("--artifacts-destination", str(home / "mlartifacts")),
            ],
            mlflow_env,
            self.mlflow_url,
        )
        for component in ("api-server", "scheduler", "dag-processor"):
            url = self.airflow_url if component == "api-server" else ""
            self._start(f"airflow-{component}", [str(BIN / "airflow"), component], self.env, url)
        with self.console.status("waiting for the MLflow server and Airflow's api-server"):
            wait_until(lambda: answers(f"{self.mlflow_url}/health"), mlflow, self.processes[mlflow.name], 120)
            api = self.services[-3]
            health = f"{self.airflow_url}/api/v2/monitor/health"
            wait_until(lambda: answers(health), api, self.processes[api.name], START_TIMEOUT_S)
        username, password = airflow_login(self.env)
        self.api = AirflowApi(self.airflow_url, username, password)
        with self.console.status("waiting for the dag-processor to parse the DAGs"):
            processor = self.services[-1]
            wait_until(self._dags_parsed, processor, self.processes[processor.name], START_TIMEOUT_S)
        # Paused until their turn, whatever an earlier session left: an unpaused weekly ipa_profile would
        # start its catch-up round, an unpaused ipa_adapt would tick before the runtime serves.
        for dag_id in (ADAPT_DAG, PROFILE_DAG):
            self.api.set_paused(dag_id, True)
        self._remember_variables()
        self.note(f"Airflow {self.airflow_url} ({self.login_text()}), MLflow {self.mlflow_url}")
        self.note(f"logs in {self.logs}")

    def _dags_parsed(self) -> bool:
        """Both DAGs parsed by this dag-processor (a previous session's rows do not count: this one sets
        the interval)."""
        assert self.api is not None
        try:
            dags = [self.api.dag(d) for d in (ADAPT_DAG, PROFILE_DAG)]
        except AirflowApiError:  # the api-server is still warming up
            return False
        return all(d and _after(d.get("last_parsed_time"), self.started_at) for d in dags)

    def _remember_variables(self) -> None:
        assert self.api is not None
        self.saved_variables = {key: self.api.variable(key) for key in DEMO_VARIABLES}

    def _restore_variables(self) -> None:
        """Give the Variables the demo set back their earlier values (or remove them)."""
        assert self.api is not None
        self.api.put_back_variables(self.saved_variables)

    def login_text(self) -> str:
        username, password = airflow_login(self.env)
        if not username:
            return "no login: every user is an admin"
        return f"user {username}, password {password or '(see the api-server log)'}"

    def build_and_profile(self) -> None:
        from ipa_tasks.variant_cache import DEMO_PIPELINE_MODULES

        pipeline = self.options.pipeline
        if pipeline in DEMO_PIPELINE_MODULES:
            self.say(f"building the variants of {pipeline} (cached after the first time)")
            subprocess.run([str(BIN / "ipa"), "build-variants", pipeline], env=self.env, check=True)
        else:
            self.say(
                f"{self.spec.name} is not a demo pipeline: its variants load as they are, nothing to build"
            )
        if not self.options.profile:
            self.say("profiling skipped (--skip-profile): the published profile is used")
            return
        conf = {**self.options.profile_conf, "pipelines": [pipeline]}
        self.say(f"profiling every variant of {self.spec.name}: one ipa_profile round ({json.dumps(conf)})")
        # A service like the others, so that an interrupted demo (or ipa demo-stop) stops its jobs too.
        argv = [str(BIN / "airflow"), "dags", "test", PROFILE_DAG, "-c", json.dumps(conf)]
        round_ = self._start("ipa-profile-round", argv, self.env)
        log, process = Path(round_.log), self.processes[round_.name]
        try:
            self._follow_profile(process)
        except BaseException:
            stop_services([round_], grace_s=10, log=self.note)
            raise
        run = self._newest_run(PROFILE_DAG)
        state = run.get("state") if run else "unknown"
        if process.returncode != 0 or state != "success":
            self.note(
                f"[yellow]the profiling round ended {state} (exit {process.returncode}); planning goes on "
                f"with the last published or shipped profile. See {log}[/yellow]"
            )
        else:
            self.note(f"profile published; round {run['dag_run_id']} in Airflow, log {log}")

    def _newest_run(self, dag_id: str) -> dict[str, Any] | None:
        assert self.api is not None
        runs = [r for r in self.api.runs(dag_id, limit=5) if _after(r.get("run_after"), self.started_at)]
        return runs[0] if runs else None

    def _follow_profile(self, process: subprocess.Popen[bytes]) -> None:
        columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[done]}"))
        with Progress(*columns, TimeElapsedColumn(), console=self.console, transient=True) as progress:
            bar = progress.add_task("ipa_profile", total=None, done="starting")
            while process.poll() is None:
                time.sleep(2)
                try:
                    run = self._newest_run(PROFILE_DAG)
                    tasks = self.api.task_instances(PROFILE_DAG, run["dag_run_id"]) if run else []  # type: ignore[union-attr]
                except AirflowApiError:
                    continue
                if tasks:
                    done = sum(
                        t.get("state") in ("success", "failed", "skipped", "upstream_failed") for t in tasks
                    )
                    running = sorted({_task_label(t) for t in tasks if t.get("state") == "running"})
                    progress.update(
                        bar,
                        total=len(tasks),
                        completed=done,
                        done=f"{done}/{len(tasks)} {', '.join(running)}",
                    )

    def serve(self) -> tuple[str, list[int]]:
        from ipa_tasks.serving.load_generator import trace_workload

        pipeline = self.options.pipeline
        self.say(f"starting the serving runtime of {self.spec.name} and deploying its first plan")
        runtime = self._start(
            "serving-runtime",
            [
                *(str(BIN / "python"), "-m", "ipa_tasks.serving.runtime", "--spec", pipeline),
                *("--port", str(self.options.runtime_port)),
                *("--router-port-base", str(self.options.router_port_base)),
            ],
            self.env,
            f"http://127.0.0.1:{self.options.runtime_port}",
        )
        with self.console.status("waiting for the runtime"):
            wait_until(
                lambda: answers(f"{runtime.url}/healthz") and runtime_file(self.settings.home).exists(),
                runtime,
                self.processes[runtime.name],
                60,
            )
        info = json.loads(runtime_file(self.settings.home).read_text(encoding="utf-8"))
        router = str(info["pipelines"][self.spec.name]["router"])
        from ipa_tasks.forecasting.trace_location import default_trace_path

        workload = [
            int(n)
            for n in trace_workload(
                default_trace_path(), self.options.start, self.options.seconds, scale=self.options.scale
            )
        ]
        with self.console.status("starting the first plan's stage servers"):
            self._deploy_first_plan(initial_load(workload))
        return router, workload

    def _deploy_first_plan(self, load: float) -> None:
        from ipa_tasks.actuation.config import config_of
        from ipa_tasks.actuation.local_runtime import LocalRuntimeTarget
        from ipa_tasks.actuation.target import apply_change
        from ipa_tasks.adaptation.planning import planner_for
        from ipa_tasks.adaptation.state import LoopState, write_state
        from ipa_tasks.adaptation.steps import describe_plan

        planner, source = planner_for(self.spec_path, self.settings.profile_store)
        # What the demo planned with and replayed, for the simulator's fidelity check (ipa fidelity).
        self.folder.mkdir(parents=True, exist_ok=True)
        planner.profile.to_csv(self.folder / RUN_PROFILE, index=False)
        run = {
            "spec": str(self.spec_path),
            "trace_start_s": self.options.start,
            "seconds": self.options.seconds,
            "scale": self.options.scale,
            "interval_s": self.options.interval_s,
            "seed": self.options.seed,
            "profile_source": source,
        }
        atomic_write_text(self.folder / RUN_FILE, json.dumps(run, indent=2) + "\n")
        plan = planner.plan(load)
        target = LocalRuntimeTarget(self.settings.home)
        running = target.read(planner.spec)
        report = apply_change(
            target, planner.spec, running, config_of(plan), ready_timeout_s=120, log=self.note
        )
        if report.status not in ("applied", "unchanged"):
            raise DemoError(f"the first deployment failed ({report.status}): {report.message}")
        # A new deployment: the loop's memory of an earlier one's load (its fallback) no longer applies.
        write_state(self.settings.home, planner.spec.name, LoopState())
        self.note(f"first plan, for {load:.0f} requests/s, from the {source}: {describe_plan(plan)}")

    def adapt_under_load(self, router: str, workload: list[int]) -> list[Any]:
        import asyncio

        from ipa_tasks.serving.load_generator import RichProgress, cycle_inputs, replay

        assert self.api is not None
        pipeline = self.options.pipeline
        self.say(
            f"replaying {len(workload)} s of the Twitter trace (from second {self.options.start}, damped by "
            f"8, x{self.options.scale:g}: {sum(workload)} requests) while ipa_adapt adapts every "
            f"{self.options.interval_s} s"
        )
        demo_values = {
            PIPELINES_VARIABLE: json.dumps([pipeline]),
            "ipa_load_source": json.dumps({"kind": "local"}),
            "ipa_adapt_dry_run": "false",
        }
        for key, value in demo_values.items():
            self.api.set_variable(key, value, "set by ipa demo")
        self.adapting = True
        self.api.set_paused(ADAPT_DAG, False)
        variables = f"{PIPELINES_VARIABLE}, ipa_load_source, ipa_adapt_dry_run"
        self.note(f"ipa_adapt unpaused for {self.spec.name} (Variables {variables} set)")
        printer = DecisionPrinter(self.settings.home, self.spec.name, self.started_at, self.console)
        printer.start()
        try:
            inputs = cycle_inputs(demo_inputs(self.spec))
            records = asyncio.run(
                replay(router, workload, inputs, seed=self.options.seed, progress=RichProgress())
            )
        finally:
            printer.stop()
        with self.console.status("letting ipa_adapt's current run finish, then pausing it"):
            self._pause_between_runs(ADAPT_DAG, 120)
        self.adapting = False
        printer.print_new()
        return records

    def _pause_between_runs(self, dag_id: str, timeout_s: float) -> None:
        """Pause the DAG while none of its runs is going: the scheduler schedules no task of a paused DAG,
        so a run caught by the pause would stay half done."""
        assert self.api is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not any(r.get("state") in ("queued", "running") for r in self.api.runs(dag_id, limit=5)):
                break
            time.sleep(0.5)
        else:
            self.note(
                f"[yellow]an {dag_id} run was still going after {timeout_s:.0f} s: pausing anyway[/yellow]"
            )
        self._pause_now(dag_id)

    def _pause_now(self, dag_id: str) -> None:
        """Pause the DAG and end what it still has going (the scheduler would leave it half done): a run
        that the pause caught is marked failed, with a note that says why."""
        assert self.api is not None
        self.api.set_paused(dag_id, True)
        for run in self.api.runs(dag_id, limit=5):
            if run.get("state") in ("queued", "running"):
                note = "stopped by ipa demo: the demo ended while this run was going"
                self.api.set_run_state(dag_id, str(run["dag_run_id"]), "failed", note)
                self.note(f"{dag_id} run {run['dag_run_id']} was still {run['state']}: marked failed")

    def report(self, records: list[Any]) -> tuple[Path, dict[str, Any], Any, str]:
        import pandas as pd

        from ipa_tasks.serving.load_generator import write_records
        from ipa_tasks.serving.report import write_report

        self.say("writing the report")
        spec = self.spec
        write_records(records, self.folder / "requests.csv")
        requests = pd.read_csv(self.folder / "requests.csv")
        decisions = decisions_between(self.settings.home, spec.name, self.started_at, datetime.now(UTC))
        decisions.to_csv(self.folder / "decisions.csv", index=False)
        if decisions.empty:
            raise DemoError(
                f"ipa_adapt recorded no decision during the replay; see the scheduler's log in {self.logs} "
                f"and the task logs in {self.env['AIRFLOW_HOME']}/logs"
            )
        written = write_report(
            self.folder, requests, decisions, sla_s=spec.sla_s, interval_s=self.options.interval_s
        )
        run_id = self._log_report(spec.name, written.summary)
        return written.path, written.summary, written.table, run_id

    def _log_report(self, pipeline: str, summary: Mapping[str, Any]) -> str:
        from ipa_tasks.tracking import experiment_id_for, mlflow_client

        client = mlflow_client(self.mlflow_url)
        experiment = experiment_id_for(client, DEMO_EXPERIMENT, self.mlflow_url)
        run = client.create_run(
            experiment,
            run_name=f"demo {pipeline} {self.started_at:%Y-%m-%d %H:%M}Z",
            tags={"ipa.pipeline": pipeline, "ipa.kind": "demo"},
        )
        run_id = run.info.run_id
        params = {
            "pipeline": pipeline,
            "trace_start_s": self.options.start,
            "seconds": self.options.seconds,
            "scale": self.options.scale,
            "interval_s": self.options.interval_s,
            "seed": self.options.seed,
        }
        for key, value in params.items():
            client.log_param(run_id, key, value)
        for key, value in summary.items():
            if isinstance(value, int | float) and math.isfinite(float(value)):
                client.log_metric(run_id, key, float(value))
        client.log_artifacts(run_id, str(self.folder), artifact_path="report")
        client.set_terminated(run_id, "FINISHED")
        return run_id

    def _leave_airflow_as_found(self) -> None:
        """Best effort, on the way out (also after a failure or Ctrl-C): ipa_adapt paused, the Variables
        as they were. Airflow's database outlives the demo, and ``make airflow`` shares it."""
        if self.api is None:
            return
        try:
            if self.adapting:
                self._pause_now(ADAPT_DAG)
            self._restore_variables()
        except (AirflowApiError, OSError) as exc:
            self.note(
                f"[yellow]could not pause ipa_adapt or restore the Variables ({exc}); check them in the "
                "Airflow UI before unpausing it[/yellow]"
            )

    def _leave_variables_for_demo_stop(self) -> None:
        """With the services kept up, the demo's Variables stay (unpausing ipa_adapt in the UI goes on
        adapting the served pipeline); ``ipa demo-stop`` gives them their earlier values back."""
        record = {
            "airflow_url": self.airflow_url,
            "airflow_home": self.env["AIRFLOW_HOME"],
            "variables": self.saved_variables,
        }
        atomic_write_text(variables_file(self.settings.home), json.dumps(record, indent=2) + "\n")

    def stop(self) -> None:
        stop_services(self.services, log=self.note)
        self._reap_all()
        write_services(self.settings.home, [s for s in self.services if is_running(s)])

    def _reap_all(self) -> None:
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)

    # --- all of it ---

    def run(self) -> DemoResult:
        self.check_nothing_runs()
        self.logs.mkdir(parents=True, exist_ok=True)
        kept = False
        try:
            self.start_services()
            self.build_and_profile()
            router, workload = self.serve()
            records = self.adapt_under_load(router, workload)
            report, summary, table, run_id = self.report(records)
            kept = self.options.keep_up
            if kept:
                self._leave_variables_for_demo_stop()
        finally:
            if not kept:
                self._leave_airflow_as_found()
                self.console.print("stopping the services")
                self.stop()
        return DemoResult(
            folder=self.folder,
            report=report,
            summary=summary,
            table=table,
            mlflow_run_id=run_id,
            airflow_url=self.airflow_url,
            mlflow_url=self.mlflow_url,
            login=self.login_text(),
            kept_up=kept,
        )


class DecisionPrinter(threading.Thread):
    """Prints each decision ``ipa_adapt`` records for the pipeline, while the load runs."""

    def __init__(self, home: Path, pipeline: str, since: datetime, console: Console) -> None:
        super().__init__(daemon=True)
        self.home, self.pipeline, self.since, self.console = home, pipeline, since, console
        self.seen = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(2.0):
            self.print_new()

    def print_new(self) -> None:
        from ipa_tasks.adaptation.decisions import summary_sentence

        try:
            table = decisions_between(self.home, self.pipeline, self.since, datetime.now(UTC))
        except (OSError, ValueError):  # a table being replaced at this moment: next time
            return
        for row in table.iloc[self.seen :].to_dict("records"):
            clock = str(row["time"])[11:19]
            self.console.print(f"      ipa_adapt {clock}Z: {summary_sentence(row)}", highlight=False)
        self.seen = len(table)

    def stop(self) -> None:
        self.done.set()
        self.join(5)
        self.print_new()


def demo_inputs(spec: PipelineSpec, limit: int = 300) -> list[Any]:
    """Requests for the pipeline's first stage: its held-out inputs, encoded as the router expects them."""
    from ipa_tasks.serving.stage_server import encode_item
    from ipa_tasks.variants import load_variant

    inputs, _ = load_variant(spec.stages[0].variants[0].model).held_out()
    return [encode_item(item) for item in list(inputs)[:limit]]


def _after(stamp: Any, moment: datetime) -> bool:
    if not stamp:
        return False
    return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")) >= moment


def _task_label(task: Mapping[str, Any]) -> str:
    index = task.get("map_index", -1)
    return str(task["task_id"]) + (
        f"[{task.get('rendered_map_index') or index}]" if index not in (-1, None) else ""
    )


# --- printing ----------------------------------------------------------------------------------------------


def print_result(console: Console, result: DemoResult) -> None:
    from ipa_tasks.serving.report import summary_text

    table = Table(title="per adaptation interval", show_lines=False)
    columns = ("interval", "offered_rps", "forecast_rps", "configuration", "p99_latency_s", "sla_violations")
    for name in (*columns, "accuracy", "total_cores"):
        table.add_column(name.replace("_", " "))
    for row in result.table.to_dict("records"):
        table.add_row(
            str(row["interval"]),
            _fmt(row["offered_rps"], ".1f"),
            _fmt(row["forecast_rps"], ".1f"),
            str(row["configuration"]),
            _fmt(row["p99_latency_s"], ".3f"),
            f"{row['sla_violations']} / {row['requests']}",
            _fmt(row["accuracy"], ".3f"),
            _fmt(row["total_cores"], ".0f"),
        )
    console.print(table)
    for line in summary_text(result.summary).splitlines():
        console.print(f"  {line}")
    console.print(f"\nreport: {result.report} (table, plots: {result.folder})")
    console.print(f"MLflow: {result.mlflow_url} (experiment {DEMO_EXPERIMENT}, run {result.mlflow_run_id})")
    if result.kept_up:
        console.print(f"Airflow: {result.airflow_url} ({result.login})")
        console.print("the services are still up; stop them with `make demo-stop` (or `ipa demo-stop`)")
    else:
        console.print("the services are stopped; `make demo DEMO_ARGS=--keep-up` leaves them up to explore")


def _fmt(value: Any, spec: str) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "-"
    return "-" if math.isnan(number) else format(number, spec)


def variables_file(home: Path) -> Path:
    """The Variables a kept-up demo changed, with their earlier values, for ``ipa demo-stop``."""
    return Path(home) / "demo" / "variables.json"


def restore_variables(home: Path, log: Callable[[str], None] = print) -> None:
    """Pause ipa_adapt and give the Variables a kept-up demo set their earlier values, while the api-server
    still runs; says so when it cannot (the record stays for another try)."""
    path = variables_file(home)
    if not path.exists():
        return
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        env = {**os.environ, "AIRFLOW_HOME": record["airflow_home"]}
        api = AirflowApi(record["airflow_url"], *airflow_login(env))
        api.set_paused(ADAPT_DAG, True)
        api.put_back_variables(record["variables"])
    except (OSError, ValueError, KeyError, TypeError, AirflowApiError) as exc:
        log(f"could not restore the Variables the demo set ({exc}); {path} keeps their earlier values")
        return
    path.unlink()
    log(f"ipa_adapt paused; Variables {', '.join(record['variables'])} as they were before the demo")


def stop_recorded_services(home: Path, log: Callable[[str], None] = print) -> list[str]:
    """What ``ipa demo-stop`` does: put Airflow's Variables back, stop every recorded service still
    running, then forget them."""
    services = read_services(home)
    if any(s.name == "airflow-api-server" and is_running(s) for s in services):
        restore_variables(home, log)
    stopped = stop_services(services, log=log)
    write_services(home, [s for s in services if is_running(s)])
    return stopped


__all__ = [
    "Demo",
    "DemoError",
    "DemoOptions",
    "DemoResult",
    "ServiceError",
    "print_result",
    "stop_recorded_services",
]
