"""Decision time of the optimizer by pipeline size and solver.

A decision is what the adaptation loop pays per tick: enumerate and prune the options at the new load,
build the model, solve it (``Planner.plan``). Pipelines are cloned from the video pipeline's synthetic
profiles, as IPA's scalability experiment did (``ipa_tasks.synthetic_profiles.scaled_video_pipeline``).
Brute force enumerates the unpruned options and runs only where that stays under its limit; wherever it
runs, the MILP solvers' objectives are checked against it.

    .venv/bin/python benchmarks/solver_scaling.py            # full grid, about 10 minutes on 2 cores
    .venv/bin/python benchmarks/solver_scaling.py --stages 1,9 --variants 1,9 --repeats 5
"""

from __future__ import annotations

import argparse
import csv
import gc
import logging
import platform
import statistics
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from ipa_tasks.optimizer.planner import Planner
from ipa_tasks.optimizer.solvers import ProblemTooLarge, SolverUnavailable
from ipa_tasks.synthetic_profiles import scaled_video_pipeline

RESULTS = Path(__file__).parent / "results" / "solver_scaling.csv"
COLUMNS = ["solver", "stages", "variants", "batch_sizes", "core_options", "median_s", "p95_s", "status"]
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)
CORES = (1, 2, 4)
SOLVERS = ("gurobi", "highs", "brute-force")
AGREEMENT_TOLERANCE = 1e-6


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def time_decisions(planner: Planner, load: float, solver: str, repeats: int) -> tuple[list[float], object]:
    """Wall time of ``repeats`` decisions (after one warm-up), and the last plan."""
    prune = solver != "brute-force"
    plan = planner.plan(load, solver=solver, prune=prune)  # warm-up: caches, imports, Gurobi environment
    gc.collect()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        plan = planner.plan(load, solver=solver, prune=prune)
        times.append(time.perf_counter() - start)
    return times, plan


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def run(stages: list[int], variants: list[int], load: float, repeats: int, out: Path) -> list[dict]:
    rows = []
    console = Console()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("solving", total=len(stages) * len(variants) * len(SOLVERS))
        for n_stages in stages:
            for n_variants in variants:
                spec, profile = scaled_video_pipeline(n_stages, n_variants, BATCH_SIZES, CORES)
                planner = Planner(spec, profile)
                reference = None
                results = {}
                for solver in reversed(SOLVERS):  # brute force first: the others are checked against it
                    progress.update(task, description=f"{n_stages} x {n_variants} {solver}")
                    try:
                        times, plan = time_decisions(
                            planner, load, solver, 3 if solver == "brute-force" else repeats
                        )
                        status = "degraded" if plan.degraded else plan.status
                        if solver == "brute-force" and not plan.degraded:
                            reference = plan.terms.objective
                        elif reference is not None and not plan.degraded:
                            if abs(plan.terms.objective - reference) > AGREEMENT_TOLERANCE:
                                status = "MISMATCH"
                            else:
                                status += "=brute-force"
                        results[solver] = (statistics.median(times), p95(times), status)
                    except SolverUnavailable:
                        results[solver] = (float("nan"), float("nan"), "refused-by-licence")
                    except ProblemTooLarge:
                        results[solver] = (float("nan"), float("nan"), "too-large")
                    progress.advance(task)
                for solver in SOLVERS:
                    median_s, p95_s, status = results[solver]
                    rows.append(
                        {
                            "solver": solver,
                            "stages": n_stages,
                            "variants": n_variants,
                            "batch_sizes": len(BATCH_SIZES),
                            "core_options": len(CORES),
                            "median_s": f"{median_s:.6f}",
                            "p95_s": f"{p95_s:.6f}",
                            "status": status,
                        }
                    )
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return rows


def print_table(rows: list[dict], load: float, repeats: int) -> None:
    table = Table(
        title=f"decision time (options + build + solve), load {load:g} rps, median of {repeats}; "
        f"{platform.processor() or platform.machine()}, {platform.python_version()}",
        title_justify="left",
    )
    for column in ("stages", "variants", "solver", "median ms", "p95 ms", "status"):
        table.add_column(column, justify="right" if column not in ("solver", "status") else "left")
    for row in rows:
        table.add_row(
            str(row["stages"]),
            str(row["variants"]),
            row["solver"],
            f"{float(row['median_s']) * 1000:.2f}",
            f"{float(row['p95_s']) * 1000:.2f}",
            row["status"],
        )
    Console(width=120).print(table)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stages", type=_ints, default=_ints("1,2,3,5,7,9,12,15,20"), help="comma-separated")
    parser.add_argument(
        "--variants", type=_ints, default=_ints("1,2,3,5,7,9,12,15,20"), help="comma-separated"
    )
    parser.add_argument("--load", type=float, default=20.0, help="requests/s (default 20, the paper's level)")
    parser.add_argument("--repeats", type=int, default=25, help="timed decisions per cell (default 25)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"CSV to write (default {RESULTS})")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # degraded plans at tiny sizes are expected and counted in the table
    rows = run(args.stages, args.variants, args.load, args.repeats, args.out)
    print_table(rows, args.load, args.repeats)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
