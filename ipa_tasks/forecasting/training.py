"""Training the peak LSTM and judging it on held-out days against the baselines (no MLflow here).

**Split.** Train on days ``[0, 14)`` of the trace and evaluate on the held-out days ``[14, 21)``, as IPA did
(:class:`TrainingConfig`, days 0-based, the last one excluded).

**Zero seconds.** The Twitter trace records about 1,740 seconds of zeros at the end of every day (missing
data, not an idle service) and, once damped by 8, a few isolated zeros. Like IPA, the *training* series has
every zero second removed before it is windowed (:func:`train_windows`); the seconds left are joined, which
splices each day's end to the next day's start (one join a day among ~118,000 windows). The *held-out*
series is used as it is, so a forecaster sees what the adaptation loop would see; windows whose actual peak
is zero are left out of the scores by :func:`~ipa_tasks.forecasting.evaluation.score_forecasts`.

**Horizon.** The forecast is the peak over the next ``horizon_s`` seconds: the adaptation interval plus the
time a change takes to land (default 40 s = 30 s + 10 s). Windows slide by 10 s, as IPA's.

**Evaluation is vectorised.** Every forecaster sees the last 120 s (12 buckets of 10 s, what the loop
observes) at every held-out window, all 60,000-odd windows of 7 days and no sub-sampling. The baselines are
computed for all windows at once from the (windows, 12) matrix of bucket maxima (and, for ``last-value``,
the second before each window) with the same arithmetic as their ``predict``; the LSTM runs in one batch.
A forecaster without a vectorised form falls back to calling ``predict`` window by window.

**Selection rule** (:func:`select`, the only place it is stated): the candidate replaces the registered
forecaster only if, on the same held-out windows, its MAPE is lower *and* its under-prediction rate is at
most the registered one's + 0.02. MAPE is the overall accuracy (over-prediction costs cores); the
under-prediction rate is how often the plan is sized below the load, i.e. SLA risk, so a lower MAPE bought
with noticeably more under-prediction is refused. A tie is refused too: retraining with the same seed gives
the same model and must not churn the registry.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ipa_tasks.forecasting.baselines import Ewma, Forecaster, Holt, LastValue, WindowMax
from ipa_tasks.forecasting.evaluation import ForecastScore, score_forecasts
from ipa_tasks.forecasting.names import BASELINE_FORECASTERS
from ipa_tasks.forecasting.trace import SECONDS_PER_DAY, days, load_trace
from ipa_tasks.forecasting.windows import training_windows

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from ipa_tasks.forecasting.lstm import LstmForecaster

Log = Callable[[str], None]

BUCKETS = 12
BUCKET_S = 10
SPAN_S = BUCKETS * BUCKET_S
"""The history every forecaster sees at a decision: 12 buckets of 10 s (IPA's LSTM input)."""
UNDER_RATE_TOLERANCE = 0.02
BASELINE_NAMES = BASELINE_FORECASTERS


@dataclass(frozen=True)
class TrainingConfig:
    """What one training uses; days are 0-based ``(first, last)`` with ``last`` excluded."""

    train_days: tuple[int, int] = (0, 14)
    eval_days: tuple[int, int] = (14, 21)
    horizon_s: int = 40
    epochs: int = 30
    seed: int = 7
    batch_size: int = 64
    stride_s: int = 10

    def __post_init__(self) -> None:
        for label in ("train_days", "eval_days"):
            span = tuple(getattr(self, label))
            if len(span) != 2 or not all(isinstance(d, int) and d >= 0 for d in span) or span[0] >= span[1]:
                raise ValueError(f"{label} must be two day numbers [first, last) with 0 <= first < last")
            object.__setattr__(self, label, span)
        (a, b), (c, d) = self.train_days, self.eval_days
        if a < d and c < b:
            raise ValueError(
                f"the held-out days {list(self.eval_days)} overlap the training days {list(self.train_days)}"
            )
        for label in ("horizon_s", "epochs", "batch_size", "stride_s"):
            if getattr(self, label) < 1:
                raise ValueError(f"{label} must be at least 1, got {getattr(self, label)}")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> TrainingConfig:
        """From the training DAG's params (the days, ``horizon_s``, ``epochs``, ``seed``)."""
        return cls(
            train_days=tuple(int(d) for d in params["train_days"]),
            eval_days=tuple(int(d) for d in params["eval_days"]),
            horizon_s=int(params["horizon_s"]),
            epochs=int(params["epochs"]),
            seed=int(params["seed"]),
        )

    def to_params(self) -> dict[str, str]:
        """As MLflow params: days as ``first,last``."""
        return {
            "train_days": f"{self.train_days[0]},{self.train_days[1]}",
            "eval_days": f"{self.eval_days[0]},{self.eval_days[1]}",
            "horizon_s": str(self.horizon_s),
            "epochs": str(self.epochs),
            "seed": str(self.seed),
            "batch_size": str(self.batch_size),
            "stride_s": str(self.stride_s),
        }


def check_covers(series: np.ndarray, config: TrainingConfig) -> None:
    """Refuse a trace shorter than the days asked for (``days`` would silently cut them short)."""
    needed = max(config.train_days[1], config.eval_days[1])
    if len(series) < needed * SECONDS_PER_DAY:
        raise ValueError(
            f"the trace has {len(series) / SECONDS_PER_DAY:.2f} days of seconds; training days "
            f"{list(config.train_days)} and held-out days {list(config.eval_days)} need {needed}"
        )


def training_series(series: np.ndarray, config: TrainingConfig) -> np.ndarray:
    """The training days with every zero second removed, as IPA did."""
    check_covers(series, config)
    train = days(series, *config.train_days)
    return train[train > 0]


def train_windows(series: np.ndarray, config: TrainingConfig) -> tuple[np.ndarray, np.ndarray]:
    """LSTM inputs (bucket maxima) and targets (peak of the next ``horizon_s``) of the training series."""
    inputs, targets = training_windows(
        training_series(series, config),
        buckets=BUCKETS,
        bucket_s=BUCKET_S,
        horizon_s=config.horizon_s,
        stride_s=config.stride_s,
    )
    if len(inputs) == 0:
        raise ValueError("the training days leave no window of 120 s history plus the horizon")
    return inputs, targets


@dataclass(frozen=True)
class HeldOut:
    """The held-out windows: decision time ``starts[k]`` (seconds into ``series``) sees
    ``series[starts[k] - 120 : starts[k]]`` as ``inputs[k]`` and must forecast ``targets[k]``."""

    series: np.ndarray = field(repr=False)
    starts: np.ndarray = field(repr=False)
    inputs: np.ndarray = field(repr=False)
    targets: np.ndarray = field(repr=False)
    first_day: int
    horizon_s: int

    def __len__(self) -> int:
        return len(self.starts)

    def history(self, index: int) -> np.ndarray:
        """The per-second history of window ``index``, as a forecaster's ``predict`` takes it."""
        start = int(self.starts[index])
        return self.series[start - SPAN_S : start]


def held_out_windows(series: np.ndarray, config: TrainingConfig) -> HeldOut:
    """Every held-out window (zeros kept; see the module docstring), sliding by ``stride_s``."""
    check_covers(series, config)
    held = days(series, *config.eval_days)
    inputs, targets = training_windows(
        held, buckets=BUCKETS, bucket_s=BUCKET_S, horizon_s=config.horizon_s, stride_s=config.stride_s
    )
    starts = np.arange(SPAN_S, len(held) - config.horizon_s + 1, config.stride_s)
    if len(starts) != len(inputs) or not (targets > 0).any():
        raise ValueError("the held-out days have no window with load to score a forecast against")
    return HeldOut(held, starts, inputs, targets, config.eval_days[0], config.horizon_s)


def baseline_forecasters(horizon_s: int, margin: float = 0.0) -> dict[str, Forecaster]:
    """The untrained forecasters by name, Holt extrapolating over ``horizon_s``."""
    return {
        "last-value": LastValue(margin=margin),
        "window-max": WindowMax(margin=margin),
        "ewma": Ewma(margin=margin),
        "holt": Holt(horizon_s=horizon_s, margin=margin),
    }


def _margin(values: np.ndarray, margin: float) -> np.ndarray:
    return np.maximum(values, 0.0) * (1.0 + margin)


def _ewma(peaks: np.ndarray, alpha: float) -> np.ndarray:
    level = peaks[:, 0]
    for column in range(1, peaks.shape[1]):
        level = alpha * peaks[:, column] + (1 - alpha) * level
    return level


def _holt(peaks: np.ndarray, alpha: float, beta: float, steps: float) -> np.ndarray:
    level, trend = peaks[:, 1], peaks[:, 1] - peaks[:, 0]
    for column in range(2, peaks.shape[1]):
        previous = level
        level = alpha * peaks[:, column] + (1 - alpha) * (level + trend)
        trend = beta * (level - previous) + (1 - beta) * trend
    return level + steps * np.maximum(trend, 0.0)


def forecast_held_out(forecaster: Forecaster, held: HeldOut) -> np.ndarray:
    """The forecast of every held-out window, equal to ``forecaster.predict(held.history(k))``."""
    from ipa_tasks.forecasting.lstm import LstmForecaster

    peaks = held.inputs
    if isinstance(forecaster, LstmForecaster) and (forecaster.buckets, forecaster.bucket_s) == (
        BUCKETS,
        BUCKET_S,
    ):
        return forecaster.predict_windows(peaks) * (1.0 + forecaster.margin)
    if isinstance(forecaster, LastValue):
        return _margin(held.series[held.starts - 1], forecaster.margin)
    if isinstance(forecaster, WindowMax) and forecaster.window_s > 0 and forecaster.window_s % BUCKET_S == 0:
        # The history is 120 s, so a longer window sees all of it.
        buckets = min(BUCKETS, forecaster.window_s // BUCKET_S)
        return _margin(peaks[:, -buckets:].max(axis=1), forecaster.margin)
    if isinstance(forecaster, Ewma) and forecaster.bucket_s == BUCKET_S:
        return _margin(_ewma(peaks, forecaster.alpha), forecaster.margin)
    if isinstance(forecaster, Holt) and forecaster.bucket_s == BUCKET_S:
        steps = forecaster.horizon_s / forecaster.bucket_s
        return _margin(_holt(peaks, forecaster.alpha, forecaster.beta, steps), forecaster.margin)
    return np.array([forecaster.predict(held.history(k)) for k in range(len(held))])


@dataclass(frozen=True)
class Evaluation:
    """One forecaster scored on the held-out windows."""

    name: str
    score: ForecastScore
    seconds: float
    """Wall time to forecast every held-out window."""
    forecasts: np.ndarray = field(repr=False, compare=False)


def evaluate(forecasters: Mapping[str, Forecaster], held: HeldOut) -> list[Evaluation]:
    """Score each forecaster on the same held-out windows, in the order given."""
    evaluations = []
    for name, forecaster in forecasters.items():
        started = time.perf_counter()
        forecasts = forecast_held_out(forecaster, held)
        seconds = time.perf_counter() - started
        evaluations.append(Evaluation(name, score_forecasts(forecasts, held.targets), seconds, forecasts))
    return evaluations


def best_of(evaluations: list[Evaluation], names: tuple[str, ...] = BASELINE_NAMES) -> Evaluation:
    """The lowest MAPE among ``names`` (the best baseline by default)."""
    return min((e for e in evaluations if e.name in names), key=lambda e: e.score.mape)


@dataclass(frozen=True)
class Decision:
    register: bool
    reason: str
    """In plain words, for the run's tag and the task log."""


def select(
    candidate: ForecastScore, current: ForecastScore | None, *, tolerance: float = UNDER_RATE_TOLERANCE
) -> Decision:
    """The selection rule (module docstring): lower MAPE and under-prediction rate <= current + tolerance."""
    if current is None:
        return Decision(True, "no forecaster was registered yet")
    mapes = f"MAPE {candidate.mape:.4f} against the registered one's {current.mape:.4f}"
    unders = f"under-prediction rate {candidate.under_rate:.4f} against {current.under_rate:.4f}"
    if not candidate.mape < current.mape:
        return Decision(False, f"not better: {mapes} is not lower")
    # The epsilon keeps "exactly 0.02 worse" on the accepted side despite binary fractions.
    if candidate.under_rate > current.under_rate + tolerance + 1e-12:
        more = f"it under-predicts more often: {unders} (+{tolerance} allowed)"
        return Decision(False, f"not better: lower {mapes}, but {more}")
    return Decision(True, f"better: lower {mapes}, {unders} (at most +{tolerance} allowed)")


@dataclass(frozen=True)
class TrainedCandidate:
    forecaster: LstmForecaster
    train_seconds: float
    train_windows: int
    losses: tuple[float, ...]
    """Mean training loss of every epoch."""


def train_candidate(
    series: np.ndarray, config: TrainingConfig, on_epoch: Callable[[int, float], None] | None = None
) -> TrainedCandidate:
    """Train the LSTM on the training windows (zero seconds removed), seeded and single-threaded."""
    from ipa_tasks.forecasting.lstm import train_lstm

    inputs, targets = train_windows(series, config)
    losses: list[float] = []

    def record(epoch: int, loss: float) -> None:
        losses.append(loss)
        if on_epoch is not None:
            on_epoch(epoch, loss)

    started = time.perf_counter()
    forecaster = train_lstm(
        inputs, targets, epochs=config.epochs, batch_size=config.batch_size, seed=config.seed, on_epoch=record
    )
    return TrainedCandidate(forecaster, time.perf_counter() - started, len(inputs), tuple(losses))


def epoch_logger(log: Log, epochs: int) -> Callable[[int, float], None]:
    """An ``on_epoch`` that logs ``epoch 3/30: loss 0.0123 (12 s)``."""
    started = time.perf_counter()

    def report(epoch: int, loss: float) -> None:
        log(f"epoch {epoch}/{epochs}: training loss {loss:.5f} ({time.perf_counter() - started:.0f} s)")

    return report


def comparison_frame(evaluations: list[Evaluation]) -> pd.DataFrame:
    """One row per forecaster: mape, under_rate, mean_under, windows, eval_seconds."""
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "forecaster": e.name,
                "mape": e.score.mape,
                "under_rate": e.score.under_rate,
                "mean_under": e.score.mean_under,
                "windows": e.score.windows,
                "eval_seconds": e.seconds,
            }
            for e in evaluations
        ]
    )


def scores_table(evaluations: list[Evaluation]) -> str:
    """The scores as an aligned plain-text table, for task logs."""
    lines = [f"{'forecaster':<12} {'MAPE':>8} {'under rate':>11} {'mean shortfall':>15} {'windows':>8}"]
    for e in evaluations:
        s = e.score
        row = f"{e.name:<12} {s.mape:>8.4f} {s.under_rate:>11.4f} {s.mean_under:>15.4f} {s.windows:>8}"
        lines.append(row)
    return "\n".join(lines)


def plot_slice(held: HeldOut, duration_s: int = 7200) -> slice:
    """The windows of ``duration_s`` from noon of the middle held-out day (or the last ``duration_s`` of a
    shorter series)."""
    n_days = max(1, len(held.series) // SECONDS_PER_DAY)
    begin = (n_days // 2) * SECONDS_PER_DAY + SECONDS_PER_DAY // 2
    if begin + duration_s > held.starts[-1]:
        begin = max(0, int(held.starts[-1]) - duration_s)
    first, last = np.searchsorted(held.starts, [begin, begin + duration_s])
    return slice(int(first), int(max(last, first + 1)))


def forecast_plot(held: HeldOut, evaluations: list[Evaluation], names: list[str]) -> Figure:
    """Forecast against actual peak over ~2 h of a held-out day, one line per forecaster in ``names``."""
    from matplotlib.figure import Figure

    window = plot_slice(held)
    starts = held.starts[window]
    day = held.first_day + int(starts[0]) // SECONDS_PER_DAY
    hours = (starts % SECONDS_PER_DAY) / 3600
    figure = Figure(figsize=(11, 4.5), layout="constrained")
    ax = figure.subplots()
    ax.plot(hours, held.targets[window], color="black", linewidth=1.2, label="actual peak")
    by_name = {e.name: e for e in evaluations}
    for index, name in enumerate(names):
        e = by_name[name]
        label = f"{name} (MAPE {e.score.mape:.3f}, under {e.score.under_rate:.1%})"
        ax.plot(hours, e.forecasts[window], color=f"C{index}", linewidth=1, alpha=0.85, label=label)
    ax.set_xlabel(f"hour of trace day {day}")
    ax.set_ylabel("requests/s (damped)")
    ax.set_title(f"held-out day {day}: forecast vs actual peak of the next {held.horizon_s} s")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return figure


def train_from_params(home: Path, params: Mapping[str, Any], run_id: str, log: Log) -> dict[str, Any]:
    """The training DAG's ``train`` task: train on the trace in ``params`` and save the LSTM under
    ``<home>/forecasters/candidates/<run>/lstm.pt``; returns what the next task needs (JSON-able)."""
    config = TrainingConfig.from_params(params)
    series = load_trace(params["trace"], int(params["damping"]))
    log(
        f"trace {params['trace']}: {len(series):,} seconds ({len(series) / SECONDS_PER_DAY:.2f} days), "
        f"damped by {params['damping']}; training on days {list(config.train_days)} without zero seconds, "
        f"horizon {config.horizon_s} s, epochs {config.epochs}, seed {config.seed}"
    )
    trained = train_candidate(series, config, epoch_logger(log, config.epochs))
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)
    path = home / "forecasters" / "candidates" / safe / "lstm.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    trained.forecaster.save(path)
    log(f"trained on {trained.train_windows:,} windows in {trained.train_seconds:.1f} s; saved to {path}")
    return {
        "candidate": str(path),
        "train_seconds": trained.train_seconds,
        "train_windows": trained.train_windows,
        "losses": list(trained.losses),
    }
