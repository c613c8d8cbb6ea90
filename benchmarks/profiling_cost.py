"""What profiling the demo pipelines costs, and how repeatable its latencies are.

1. Builds every variant of both demo pipelines (cached after the first time; build time is reported but is
   not profiling).
2. **Wall time**: profiles every variant once, each as the real job process (``run_locally``: start the
   process, load the variant, warm up, time every batch size and core count of its stage, write the
   table), one after another, as a round of ``ipa_profile`` with the local runner does.
3. **Repeatability**: profiles every variant ``--rounds`` more times at ``--batch-sizes`` on one core and
   reports, per (variant, batch size), the coefficient of variation of the p50 latency across rounds.

Targets (issue 3): every variant profiled within 3 minutes on 2 cores; CV at most 5 % at batch 8.

    .venv/bin/python benchmarks/profiling_cost.py                 # both pipelines, about 5 minutes
    .venv/bin/python benchmarks/profiling_cost.py --pipelines digit-strips --rounds 3
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from ipa_tasks.profiling_job import ProfilingJob, run_locally
from ipa_tasks.settings import current_settings
from ipa_tasks.spec import load_spec, resolve_spec_path
from ipa_tasks.variant_cache import demo_pipeline, ensure_built

RESULTS = Path(__file__).parent / "results" / "profiling_cost.csv"
WALL_TIME_TARGET_S = 180.0
CV_TARGET = 0.05


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _job(pipeline: str, stage: str, variant: str, batch_sizes, cores, reps: int, out: Path) -> ProfilingJob:
    return ProfilingJob(
        pipeline, pipeline, stage, variant, tuple(batch_sizes), tuple(cores), reps, 5, str(out)
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pipelines", default="digit-strips,language-routing", help="comma-separated")
    parser.add_argument("--repetitions", type=int, default=30, help="timed batches per point (default 30)")
    parser.add_argument("--rounds", type=int, default=5, help="repeat rounds for the CV (default 5)")
    parser.add_argument("--batch-sizes", type=_ints, default=[1, 8], help="batch sizes of the CV rounds")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    console = Console()
    settings = current_settings()
    pipelines = [p.strip() for p in args.pipelines.split(",") if p.strip()]
    selected = []
    for name in pipelines:
        spec = load_spec(resolve_spec_path(name))
        selected += [(spec, stage, variant) for stage, variant in spec.select_variants()]
    scratch = Path(tempfile.mkdtemp(prefix="profiling-cost-"))
    wall: dict[tuple[str, str], float] = {}
    build_s = 0.0
    p50: dict[tuple[str, str, int], list[float]] = {}
    with Progress(console=console) as progress:
        building = progress.add_task("build variants (cached after the first run)", total=len(selected))
        for spec, stage, variant in selected:
            started = time.perf_counter()
            ensure_built(settings.variant_cache, demo_pipeline(spec.name), stage, variant, lambda _: None)
            build_s += time.perf_counter() - started
            progress.advance(building)
        profiling = progress.add_task("profile every variant once (full grid)", total=len(selected))
        for spec, stage, variant in selected:
            stage_spec = spec.stage(stage)
            job = _job(
                spec.name, stage, variant, stage_spec.batch_sizes, stage_spec.cores, args.repetitions,
                scratch / f"full.{variant}.parquet",
            )  # fmt: skip
            started = time.perf_counter()
            run_locally(job)
            wall[(spec.name, variant)] = time.perf_counter() - started
            progress.advance(profiling)
        repeat = progress.add_task("repeat rounds for the CV", total=args.rounds * len(selected))
        for index in range(args.rounds):
            for spec, stage, variant in selected:
                out = scratch / f"round{index}.{variant}.parquet"
                run_locally(_job(spec.name, stage, variant, args.batch_sizes, [1], args.repetitions, out))
                table = pd.read_parquet(out)
                for row in table.itertuples(index=False):
                    p50.setdefault((spec.name, variant, int(row.batch_size)), []).append(row.latency_p50_s)
                progress.advance(repeat)

    total = sum(wall.values())
    records = []
    for (pipeline, variant, batch), samples in sorted(p50.items()):
        mean = statistics.fmean(samples)
        cv = statistics.stdev(samples) / mean if len(samples) > 1 else float("nan")
        records.append(
            {
                "pipeline": pipeline,
                "variant": variant,
                "profile_wall_s": round(wall[(pipeline, variant)], 2),
                "batch_size": batch,
                "rounds": len(samples),
                "p50_mean_ms": round(mean * 1e3, 4),
                "p50_cv": round(cv, 4),
            }
        )
    table = Table(title="Profiling cost and repeatability", title_justify="left")
    for column in ("pipeline", "variant", "profile s", "batch", "p50 ms (mean)", "CV of p50"):
        table.add_column(column, justify="left" if column in ("pipeline", "variant") else "right")
    for r in records:
        flag = "" if r["batch_size"] != 8 or r["p50_cv"] <= CV_TARGET else " [red]> 5 %[/]"
        table.add_row(
            r["pipeline"],
            r["variant"],
            f"{r['profile_wall_s']:.1f}",
            str(r["batch_size"]),
            f"{r['p50_mean_ms']:.3f}",
            f"{r['p50_cv']:.1%}{flag}",
        )
    console.print(table)
    at_8 = [r["p50_cv"] for r in records if r["batch_size"] == 8]
    console.print(
        f"all {len(wall)} variants profiled in {total:.0f} s (target {WALL_TIME_TARGET_S:.0f} s: "
        f"{'met' if total <= WALL_TIME_TARGET_S else 'MISSED'}); builds {build_s:.0f} s; "
        f"worst CV at batch 8 {max(at_8):.1%} (target {CV_TARGET:.0%}: "
        f"{'met' if max(at_8) <= CV_TARGET else 'MISSED'})"
    )
    console.print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
