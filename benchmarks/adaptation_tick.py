"""What one adaptation tick costs: observe + forecast + solve + diff per pipeline, and one ``ipa_adapt``
run under the real Airflow scheduler.

Part 1 replays IPA's bursty Twitter window (``--start``, damped by 8, times ``--scale`` so that it spans
the demo pipelines' range) through the local runtime's request-count file, as a router would write it,
and runs the tick's steps in this process once per simulated interval, with the functions the DAG's tasks
call (a new planner every tick, as in a task; but imports, torch and the MLflow store stay warm in one
process, which part 2 does not spare); plans are applied to an in-memory target, so each diff is against the
previous plan. Part 2 starts Airflow (api-server, scheduler, dag-processor;
LocalExecutor, SQLite, loopback) in a temporary home, feeds the request-count file with the same window,
unpauses ``ipa_adapt`` and times its runs (start to end, from the REST API).

    .venv/bin/python benchmarks/adaptation_tick.py                      # both parts, about 5 minutes
    .venv/bin/python benchmarks/adaptation_tick.py --scheduler-runs 0   # only the in-process ticks
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results" / "adaptation_tick.csv"
PIPELINES = ("digit-strips", "language-routing")
BURSTY_START = 1_301_160
TARGET_TICK_S = 0.5
STEPS = ("observe_s", "forecast_s", "decide_s")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="adaptation_tick.py")
    parser.add_argument("--ticks", type=int, default=40, help="in-process ticks per pipeline (default 40)")
    parser.add_argument("--interval", type=int, default=30, help="seconds between ticks (default 30)")
    parser.add_argument(
        "--forecasters", default="window-max,lstm", help="forecasters of part 1 (default window-max,lstm)"
    )
    parser.add_argument("--trace", type=Path, default=None, help="per-second trace (default: the shared one)")
    parser.add_argument("--start", type=int, default=BURSTY_START, help="trace second to start at")
    parser.add_argument(
        "--scale", type=float, default=40.0, help="load multiplier (default 40: the demo pipelines' range)"
    )
    parser.add_argument("--scheduler-runs", type=int, default=6, help="ipa_adapt runs to time (0: skip)")
    parser.add_argument("--port", type=int, default=18793, help="api-server port of part 2")
    parser.add_argument("--out", type=Path, default=RESULTS, help="CSV of the results")
    return parser.parse_args(argv)


def default_trace() -> Path:
    from ipa_tasks.forecasting.trace_location import default_trace_path

    return default_trace_path()


def scaled_window(trace: Path, start: int, scale: float) -> np.ndarray:
    """The trace from ``start`` on, damped by 8 as IPA did, times ``scale``, as whole requests per second."""
    from ipa_tasks.forecasting.trace import load_trace

    return np.floor(load_trace(trace)[start:] * scale)


def write_counts(home: Path, series: np.ndarray, t0: int, seconds: range) -> None:
    """What the local router writes: one row per second per pipeline, ``series[s - t0]`` requests."""
    from ipa_tasks.monitoring import append_rates
    from ipa_tasks.serving.locations import request_counts_file

    for pipeline in PIPELINES:
        path = request_counts_file(home, pipeline)
        append_rates(path, {s: int(series[s - t0]) for s in seconds})


def register_quick_lstm(tracking_uri: str, trace: Path, home: Path) -> None:
    """A champion LSTM in the benchmark's own store (2 training days, 2 epochs: the tick's cost does not
    depend on how well it was trained), so the ``lstm`` path loads a real registered model."""
    from ipa_tasks.forecasting.registry import register_from_params
    from ipa_tasks.forecasting.training import train_from_params
    from ipa_tasks.settings import Settings

    params = {"trace": str(trace), "damping": 8, "train_days": [0, 2], "eval_days": [14, 15]}
    params |= {"horizon_s": 40, "epochs": 2, "seed": 7}
    quiet = lambda _: None  # noqa: E731
    trained = train_from_params(home, params, "benchmark", quiet)
    register_from_params(Settings(home=home, tracking_uri=tracking_uri), params, trained, quiet)


def in_process_ticks(
    home: Path, tracking_uri: str, forecaster: str, args: argparse.Namespace, series: np.ndarray
) -> list[dict]:
    """Time the steps of ``args.ticks`` ticks per pipeline on the replayed window."""
    from ipa_tasks.actuation.config import config_from_dict, config_of
    from ipa_tasks.actuation.memory import InMemoryTarget
    from ipa_tasks.actuation.target import apply_change
    from ipa_tasks.adaptation.steps import (
        TickOptions,
        decide,
        forecast_load,
        observe_load,
        pipelines_to_adapt,
    )
    from ipa_tasks.optimizer.plan import Plan
    from ipa_tasks.settings import Settings
    from ipa_tasks.spec import load_spec

    settings = Settings(home=home, tracking_uri=tracking_uri)
    options = TickOptions(forecaster=forecaster, target="local", load_source={"kind": "local"})
    target = InMemoryTarget()
    quiet = lambda _: None  # noqa: E731
    t0 = int(time.time()) - options.history_s - args.ticks * args.interval
    written = t0
    rows = []
    with Progress(transient=True) as progress:
        task = progress.add_task(f"in-process ticks ({forecaster})", total=args.ticks * len(PIPELINES))
        for tick_index in range(args.ticks):
            now = t0 + options.history_s + tick_index * args.interval
            write_counts(home, series, t0, range(written, now))
            written = now
            for tick in pipelines_to_adapt(list(PIPELINES)):
                tick = observe_load(settings, tick, options, quiet, now=now)
                tick = forecast_load(settings, tick, options, quiet)
                tick = decide(settings, tick, options, target, quiet)
                if "error" in tick or tick.get("plan") is None:
                    raise RuntimeError(f"tick {tick_index} of {tick['pipeline']} made no plan: {tick}")
                spec = load_spec(tick["spec"])
                start = time.perf_counter()
                desired = config_of(Plan.from_dict(tick["plan"]))
                apply_change(target, spec, config_from_dict(tick["running"]), desired, log=quiet)
                rows.append(
                    {
                        "pipeline": tick["pipeline"],
                        "forecaster": tick["forecast"]["forecaster"],
                        "tick": tick_index,
                        "load_rps": tick["forecast"]["rps"],
                        "steps": len(tick["steps"]),
                        **{step: tick[step] for step in STEPS},
                        "tick_s": sum(tick[step] for step in STEPS),
                        "apply_s": time.perf_counter() - start,
                        "solve_s": tick["plan"]["build_time_s"] + tick["plan"]["solve_time_s"],
                    }
                )
                progress.advance(task)
    return rows


class RequestCounts(threading.Thread):
    """Plays the local router while Airflow runs: two minutes of history at once, then a row a second."""

    def __init__(self, home: Path, series: np.ndarray) -> None:
        super().__init__(daemon=True)
        self.home, self.series = home, series
        self.stop = threading.Event()

    def run(self) -> None:
        t0 = int(time.time()) - 130
        write_counts(self.home, self.series, t0, range(t0, t0 + 130))
        second = t0 + 130
        while not self.stop.wait(max(0.0, second + 1 - time.time())):
            write_counts(self.home, self.series, t0, range(second, second + 1))
            second += 1


def scheduler_runs(
    home: Path, tracking_uri: str, args: argparse.Namespace, series: np.ndarray, console: Console
) -> list[dict]:
    """Start Airflow, unpause ipa_adapt, time ``args.scheduler_runs`` runs, stop Airflow."""
    airflow_home = home / "airflow"
    url = f"http://127.0.0.1:{args.port}"
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(args.port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__API_AUTH__JWT_SECRET": "benchmark-" + "x" * 64,
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(args.port + 1),
        "IPA_HOME": str(home),
        "MLFLOW_TRACKING_URI": tracking_uri,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "GX_ANALYTICS_ENABLED": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    env.pop("AIRFLOW_CONN_IPA_KUBERNETES", None)
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True)
    logs = home / "logs"
    logs.mkdir(exist_ok=True)
    processes = [
        subprocess.Popen(
            [airflow, component],
            env=env,
            stdout=(logs / f"{component}.log").open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for component in ("api-server", "scheduler", "dag-processor")
    ]
    counts = RequestCounts(home, series)
    counts.start()
    try:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("waiting for Airflow to parse ipa_adapt", total=None)
            _wait(lambda: _get(f"{url}/api/v2/dags/ipa_adapt") is not None, 180)
            _patch(f"{url}/api/v2/dags/ipa_adapt", {"is_paused": False})
            progress.update(task, description=f"timing {args.scheduler_runs} ipa_adapt runs", total=None)
            deadline = 120 + args.scheduler_runs * (args.interval + 60)
            _wait(lambda: len(_finished(url)) >= args.scheduler_runs, deadline)
        _patch(f"{url}/api/v2/dags/ipa_adapt", {"is_paused": True})
        runs = _finished(url)[: args.scheduler_runs]
        return [{**run, "tasks": _task_seconds(url, run["run_id"])} for run in runs]
    finally:
        counts.stop.set()
        for process in processes:
            os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def _get(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)
    except OSError:
        return None


def _patch(url: str, body: dict) -> None:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="PATCH", headers={"Content-Type": "application/json"}
    )
    urllib.request.urlopen(request, timeout=10).close()


def _task_seconds(url: str, run_id: str) -> dict[str, float]:
    """task id -> the longest of its (mapped) instances' durations, in seconds."""
    from datetime import datetime

    found = _get(f"{url}/api/v2/dags/ipa_adapt/dagRuns/{run_id}/taskInstances") or {}
    seconds: dict[str, float] = {}
    for ti in found.get("task_instances", []):
        if ti.get("start_date") and ti.get("end_date"):
            start, end = (datetime.fromisoformat(ti[k]) for k in ("start_date", "end_date"))
            seconds[ti["task_id"]] = max(seconds.get(ti["task_id"], 0.0), (end - start).total_seconds())
    return seconds


def _finished(url: str) -> list[dict]:
    runs = (_get(f"{url}/api/v2/dags/ipa_adapt/dagRuns?order_by=start_date&limit=100") or {}).get(
        "dag_runs", []
    )
    from datetime import datetime

    done = []
    for run in runs:
        if run["state"] not in ("success", "failed"):
            continue
        start, end = (datetime.fromisoformat(run[k]) for k in ("start_date", "end_date"))
        done.append(
            {"run_id": run["dag_run_id"], "state": run["state"], "wall_s": (end - start).total_seconds()}
        )
    return done


def _wait(condition, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout_s:.0f} s; see the logs of the Airflow components")
        time.sleep(1)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _p95(values: list[float]) -> float:
    return sorted(values)[max(0, round(0.95 * len(values)) - 1)] if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    trace = args.trace or default_trace()
    series = scaled_window(trace, args.start, args.scale)
    forecasters = [f for f in args.forecasters.split(",") if f]
    results = []
    with tempfile.TemporaryDirectory(prefix="ipa-adapt-bench-") as folder:
        home = Path(folder)
        tracking_uri = f"sqlite:///{home / 'mlflow.db'}"
        with console.status("registering a champion LSTM in the benchmark's MLflow store"):
            register_quick_lstm(tracking_uri, trace, home / "training")
        table = Table(title=f"in-process tick: {args.ticks} ticks per pipeline, every {args.interval} s")
        for column in ("pipeline", "forecaster", "step", "median s", "p95 s", "target"):
            table.add_column(column, justify="right" if column in ("median s", "p95 s") else "left")
        for forecaster in forecasters:
            ticks = in_process_ticks(
                home / f"in-process-{forecaster}", tracking_uri, forecaster, args, series
            )
            for pipeline in PIPELINES:
                rows = [r for r in ticks if r["pipeline"] == pipeline]
                used = rows[0]["forecaster"]
                for step in (*STEPS, "solve_s", "tick_s", "apply_s"):
                    values = [r[step] for r in rows]
                    target = f"<= {TARGET_TICK_S}" if step == "tick_s" else ""
                    table.add_row(
                        pipeline, used, step, f"{_median(values):.4f}", f"{_p95(values):.4f}", target
                    )
                    results.append(
                        {
                            "part": "in-process",
                            "pipeline": pipeline,
                            "forecaster": used,
                            "measure": step,
                            "n": len(values),
                            "median_s": _median(values),
                            "p95_s": _p95(values),
                        }
                    )
                changed = sum(1 for r in rows[1:] if r["steps"])
                loads = [r["load_rps"] for r in rows]
                console.print(
                    f"{pipeline} ({used}): forecasts {min(loads):.0f}-{max(loads):.0f} requests/s; "
                    f"{changed} of {len(rows) - 1} ticks after the first changed the plan"
                )
        console.print(table)
        if args.scheduler_runs:
            runs = scheduler_runs(home / "scheduler", tracking_uri, args, series, console)
            walls = [r["wall_s"] for r in runs]
            states = {r["state"] for r in runs}
            results.append(
                {
                    "part": "scheduler",
                    "pipeline": ",".join(PIPELINES),
                    "forecaster": "lstm (DAG default)",
                    "measure": "dag_run_wall_s",
                    "n": len(walls),
                    "median_s": _median(walls),
                    "p95_s": _p95(walls),
                }
            )
            tasks = Table(title="ipa_adapt under the scheduler: seconds per task (slowest mapped instance)")
            for column in ("task", "median s", "max s"):
                tasks.add_column(column, justify="left" if column == "task" else "right")
            steps = ("observe", "forecast", "plan", "apply", "record")
            for task_id in ("select_pipelines", *(f"tick.{step}" for step in steps)):
                values = [r["tasks"][task_id] for r in runs if task_id in r["tasks"]]
                tasks.add_row(task_id, f"{_median(values):.2f}", f"{max(values, default=float('nan')):.2f}")
                results.append(
                    {
                        "part": "scheduler",
                        "pipeline": ",".join(PIPELINES),
                        "forecaster": "lstm (DAG default)",
                        "measure": f"task_{task_id}_s",
                        "n": len(values),
                        "median_s": _median(values),
                        "p95_s": _p95(values),
                    }
                )
            console.print(tasks)
            console.print(
                f"ipa_adapt under the scheduler ({len(PIPELINES)} pipelines per run): median "
                f"{_median(walls):.1f} s, p95 {_p95(walls):.1f} s, max {max(walls):.1f} s over {len(walls)} "
                f"runs (states {', '.join(sorted(states))}; interval {args.interval} s)"
            )
    machine = f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as out:
        columns = ["part", "pipeline", "forecaster", "measure", "n", "median_s", "p95_s", "machine"]
        writer = csv.DictWriter(out, fieldnames=columns)
        writer.writeheader()
        for row in results:
            writer.writerow({**row, "machine": machine})
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
