"""Decision time of the optimizer by pipeline size and solver.

A decision is what the adaptation loop pays per tick: enumerate and prune the options at the new load,
build the model, solve it (``Planner.plan``). Pipelines are cloned from the video pipeline's synthetic
profiles, as IPA's scalability experiment did (``ipa_tasks.synthetic_profiles.scaled_video_pipeline``).
Brute force enumerates the unpruned options and runs only where that stays under its limit; wherever it
runs, the MILP solvers' objectives are checked against it.

    .venv/bin/python benchmarks/solver_scaling.py            # full grid, about 2 minutes on 2 cores
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
BRUTE_FORCE_REPEATS = 3


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def run(stages: list[int], variants: list[int], load: float, repeats: int, out: Path) -> list[dict]:
    """Time every cell, interleaved: each round times every (cell, solver) once.

    A shared machine drifts (other tenants, frequency); interleaving spreads a slow minute over all cells
    instead of landing on whichever cells happened to run during it.
    """
    cells = [(s, v) for s in stages for v in variants]
    planners = {}
    plans: dict[tuple[int, int, str], object] = {}
    times: dict[tuple[int, int, str], list[float]] = {}
    status: dict[tuple[int, int, str], str] = {}
    console = Console()
    with Progress(console=console, transient=True) as progress:
        setup = progress.add_task("building pipelines and warming up", total=len(cells))
        for n_stages, n_variants in cells:
            spec, profile = scaled_video_pipeline(n_stages, n_variants, BATCH_SIZES, CORES)
            planner = planners[(n_stages, n_variants)] = Planner(spec, profile)
            for solver in SOLVERS:
                key = (n_stages, n_variants, solver)
                try:
                    # Brute force runs on the unpruned options: the reference, and timed a few times only.
                    plans[key] = planner.plan(load, solver=solver, prune=solver != "brute-force")
                    times[key] = []
                except SolverUnavailable:
                    status[key] = "refused-by-licence"
                except ProblemTooLarge:
                    status[key] = "too-large"
            progress.advance(setup)
        rounds = progress.add_task("timing", total=repeats)
        for round_ in range(repeats):
            gc.collect()
            for (n_stages, n_variants), planner in planners.items():
                for solver in SOLVERS:
                    key = (n_stages, n_variants, solver)
                    if key not in times or (solver == "brute-force" and round_ >= BRUTE_FORCE_REPEATS):
                        continue
                    start = time.perf_counter()
                    planner.plan(load, solver=solver, prune=solver != "brute-force")
                    times[key].append(time.perf_counter() - start)
            progress.advance(rounds)

    rows = []
    for n_stages, n_variants in cells:
        reference = plans.get((n_stages, n_variants, "brute-force"))
        for solver in SOLVERS:
            key = (n_stages, n_variants, solver)
            if key in status:
                median_s = p95_s = float("nan")
                state = status[key]
            else:
                plan = plans[key]
                median_s, p95_s = statistics.median(times[key]), p95(times[key])
                state = "degraded" if plan.degraded else plan.status
                if solver != "brute-force" and reference is not None and not reference.degraded:
                    agrees = abs(plan.terms.objective - reference.terms.objective) <= AGREEMENT_TOLERANCE
                    state = state + "=brute-force" if agrees else "MISMATCH"
            rows.append(
                {
                    "solver": solver,
                    "stages": n_stages,
                    "variants": n_variants,
                    "batch_sizes": len(BATCH_SIZES),
                    "core_options": len(CORES),
                    "median_s": f"{median_s:.6f}",
                    "p95_s": f"{p95_s:.6f}",
                    "status": state,
                }
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return rows


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


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
