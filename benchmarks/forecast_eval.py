"""How well the peak LSTM forecasts the Twitter trace against the baselines, on held-out days.

The same training and evaluation as the ``ipa_train_forecaster`` DAG, with its defaults: IPA's LSTM trained
on days [0, 14) of the trace (damped by 8, zero seconds removed), then it and the baselines (last value,
window max, EWMA, Holt) forecast the peak of the next ``--horizon`` seconds from the last 120 s at every
10-s window of the held-out days [14, 21), all ~60,000 of them (the baselines vectorised over the matrix of
bucket maxima, the LSTM in one batch). Reported per forecaster: MAPE, under-prediction rate (windows forecast
below the actual peak), mean shortfall of those windows, and the seconds spent training and forecasting;
then the LSTM and window max again with each ``--margins`` added (``ipa_adapt``'s ``forecast_margin``).
Nothing is logged to MLflow unless ``--track`` (then the run is logged and registered as the DAG would).

    .venv/bin/python benchmarks/forecast_eval.py                 # the DAG's defaults: 30 epochs, ~3 minutes
    .venv/bin/python benchmarks/forecast_eval.py --epochs 3 --horizon 20
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ipa_tasks.forecasting.evaluation import score_forecasts
from ipa_tasks.forecasting.trace import IPA_DAMPING, SECONDS_PER_DAY, load_trace
from ipa_tasks.forecasting.trace_location import default_trace_path
from ipa_tasks.forecasting.training import (
    Evaluation,
    TrainingConfig,
    baseline_forecasters,
    evaluate,
    held_out_windows,
    train_candidate,
)

RESULTS = Path(__file__).parent / "results" / "forecast_eval.csv"


def _days(text: str) -> tuple[int, int]:
    first, last = (int(part) for part in text.split(","))
    return first, last


def _margins(text: str) -> tuple[float, ...]:
    return tuple(float(part) for part in text.split(",") if part.strip())


def with_margins(evaluations: list[Evaluation], held, margins: tuple[float, ...]) -> list[Evaluation]:
    """``lstm`` and ``window-max`` again with each margin added, as ``ipa_adapt`` forecasts."""
    extra = []
    for margin in margins:
        for e in evaluations:
            if e.name in ("lstm", "window-max"):
                forecasts = e.forecasts * (1 + margin)
                score = score_forecasts(forecasts, held.targets)
                extra.append(Evaluation(f"{e.name} +{margin:.0%}", score, e.seconds, forecasts))
    return evaluations + extra


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--trace", type=Path, default=default_trace_path(), help="per-second CSV second,requests"
    )
    parser.add_argument(
        "--damping", type=int, default=IPA_DAMPING, help="divide the load by this (default 8)"
    )
    parser.add_argument("--train-days", type=_days, default=(0, 14), help="first,last (default 0,14)")
    parser.add_argument("--eval-days", type=_days, default=(14, 21), help="first,last (default 14,21)")
    parser.add_argument(
        "--horizon", type=int, default=40, help="forecast the peak of the next N s (default 40)"
    )
    parser.add_argument("--epochs", type=int, default=30, help="LSTM training epochs (default 30)")
    parser.add_argument("--seed", type=int, default=7, help="training seed (default 7)")
    parser.add_argument(
        "--margins",
        type=_margins,
        default=(0.1, 0.2),
        help="also score lstm and window-max with these margins added (default 0.1,0.2; as ipa_adapt's "
        "forecast_margin)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"CSV to write (default {RESULTS.name})")
    parser.add_argument(
        "--track", action="store_true", help="also log the run to MLflow and register if better"
    )
    args = parser.parse_args()

    started = time.perf_counter()
    console = Console()
    config = TrainingConfig(
        train_days=args.train_days,
        eval_days=args.eval_days,
        horizon_s=args.horizon,
        epochs=args.epochs,
        seed=args.seed,
    )
    series = load_trace(args.trace, args.damping)
    console.print(
        f"{args.trace}: {len(series):,} s ({len(series) / SECONDS_PER_DAY:.2f} days), "
        f"damped by {args.damping}; "
        f"train days {list(config.train_days)}, held-out days {list(config.eval_days)}, "
        f"horizon {config.horizon_s} s, epochs {config.epochs}, seed {config.seed}"
    )
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        training = progress.add_task("training the LSTM (epochs)", total=config.epochs, loss="-")

        def on_epoch(epoch: int, loss: float) -> None:
            progress.update(training, completed=epoch, loss=f"{loss:.5f}")

        trained = train_candidate(series, config, on_epoch)
    console.print(f"trained on {trained.train_windows:,} windows in {trained.train_seconds:.1f} s")

    eval_started = time.perf_counter()
    held = held_out_windows(series, config)
    windows_s = time.perf_counter() - eval_started
    evaluations = evaluate({"lstm": trained.forecaster, **baseline_forecasters(config.horizon_s)}, held)
    evaluations = with_margins(evaluations, held, args.margins)

    table = Table(
        title=f"peak of the next {config.horizon_s} s on held-out days {list(config.eval_days)} "
        f"({len(held):,} windows; building them took {windows_s:.2f} s)"
    )
    for name in ("forecaster", "MAPE", "under-prediction rate", "mean shortfall", "train s", "eval s"):
        table.add_column(name, justify="left" if name == "forecaster" else "right")
    rows = []
    for e in evaluations:
        train_s = trained.train_seconds if e.name.startswith("lstm") else 0.0
        table.add_row(
            e.name,
            f"{e.score.mape:.4f}",
            f"{e.score.under_rate:.2%}",
            f"{e.score.mean_under:.2%}",
            f"{train_s:.1f}",
            f"{e.seconds:.3f}",
        )
        rows.append(
            {
                "forecaster": e.name,
                "mape": f"{e.score.mape:.6f}",
                "under_rate": f"{e.score.under_rate:.6f}",
                "mean_under": f"{e.score.mean_under:.6f}",
                "windows": e.score.windows,
                "train_seconds": f"{train_s:.2f}",
                "eval_seconds": f"{e.seconds:.4f}",
                "horizon_s": config.horizon_s,
                "epochs": config.epochs,
                "seed": config.seed,
                "train_days": f"{config.train_days[0]}-{config.train_days[1]}",
                "eval_days": f"{config.eval_days[0]}-{config.eval_days[1]}",
            }
        )
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    console.print(f"wrote {args.out}")

    if args.track:
        from ipa_tasks.forecasting.registry import default_cache_dir, evaluate_and_register
        from ipa_tasks.settings import current_settings

        settings = current_settings()
        evaluate_and_register(
            settings.tracking_uri,
            series,
            config,
            trained,
            source=str(args.trace),
            damping=args.damping,
            cache_dir=default_cache_dir(settings),
            log=console.print,
        )
    console.print(f"wall time {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
