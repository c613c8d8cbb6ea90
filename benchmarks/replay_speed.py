"""How fast the replay simulator runs: simulated seconds per wall second for IPA's 20-minute bursty window,
per pipeline, at the paper's load (damped by 8) and at multiples of it (target: a 20-minute experiment in
under 2 s, i.e. over 600x real time).

    .venv/bin/python benchmarks/replay_speed.py                    # every IPA pipeline and digit-strips
    .venv/bin/python benchmarks/replay_speed.py --scales 1,4,16    # how it scales with load

Each row is the median of ``--rounds`` runs (after one untimed warm-up), and the time covers the whole
replay: 40 decisions (the optimizer, about half of it at the paper's load) and serving every request.
"""

from __future__ import annotations

import argparse
import csv
import platform
import statistics
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results" / "replay_speed.csv"
PIPELINES = ("video", "audio-qa", "audio-sent", "sum-qa", "nlp", "digit-strips")
TARGET_S = 2.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="replay_speed.py")
    parser.add_argument("--pipelines", default=",".join(PIPELINES), help="comma-separated spec names")
    parser.add_argument("--scales", default="1,2,4,8", help="load multipliers (default 1,2,4,8)")
    parser.add_argument("--window", default="bursty", help="IPA's load window (default bursty)")
    parser.add_argument("--rounds", type=int, default=3, help="timed runs per row (default 3)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="CSV of the results")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from ipa_tasks.forecasting.registry import baseline_forecasters
    from ipa_tasks.optimizer.planner import Planner
    from ipa_tasks.simulation.replay import simulate, window_forecaster
    from ipa_tasks.simulation.windows import load_pattern
    from ipa_tasks.spec import resolve_spec_path

    args = parse_args(argv)
    window = load_pattern(args.window)
    forecast = window_forecaster(
        "window-max", history_s=120, horizon_s=40, margin=0.1, make=lambda n: baseline_forecasters(40, 0.1)[n]
    )
    rows = []
    console = Console()
    for name in args.pipelines.split(","):
        planner = Planner.from_files(resolve_spec_path(name), None)
        for scale in (float(s) for s in args.scales.split(",")):
            load = window * scale
            simulate(planner, planner.profile, load, forecast)  # warm-up
            times, result = [], None
            for _ in range(args.rounds):
                start = time.perf_counter()
                result = simulate(planner, planner.profile, load, forecast)
                times.append(time.perf_counter() - start)
            assert result is not None
            wall = statistics.median(times)
            rows.append(
                {
                    "pipeline": name,
                    "scale": scale,
                    "requests": result.summary["requests"],
                    "simulated_s": len(window),
                    "wall_s": wall,
                    "speedup": len(window) / wall,
                    "violation_share": result.summary["violation_share"],
                    "plan_changes": result.summary["plan_changes"],
                }
            )
    table = Table(title=f"replay of IPA's {args.window} window ({len(window)} s), {platform.node()}")
    for column in ("pipeline", "load x", "requests", "wall s", "x real time", "target", "violations"):
        table.add_column(column)
    for row in rows:
        met = "met" if row["wall_s"] <= TARGET_S else "MISSED"
        table.add_row(
            row["pipeline"],
            f"{row['scale']:g}",
            str(row["requests"]),
            f"{row['wall_s']:.3f}",
            f"{row['speedup']:.0f}",
            met,
            f"{row['violation_share']:.2%}",
        )
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    console.print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
