"""IPA's LSTM forecaster in PyTorch: 12 bucket maxima in, the peak of the next horizon out.

The network follows IPA's (one LSTM layer of 25 units, a dense output; Adam, MSE). Each window is divided
by its own level (the peak of its 12 bucket maxima, at least 1 request/s) and the network forecasts the
coming peak as a multiple of that level, so one model serves a pipeline at 5 requests/s and one at 5,000:
the LSTM's saturating units cannot extrapolate past the loads they were trained on, and a constant scale
(IPA's) made a model trained on the damped Twitter trace forecast a fifth of a load ten times larger.
Models saved with a constant scale (``normalisation="global"``) still load and forecast as before.
Training is seeded and single-threaded, so a model trains to the same weights on every run of the same
machine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ipa_tasks.forecasting.windows import bucket_maxima


class PeakLstm(nn.Module):
    def __init__(self, hidden: int = 25) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size=1, hidden_size=hidden, batch_first=True)
        self.out = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sequence, _ = self.lstm(x.unsqueeze(-1))
        return self.out(torch.relu(sequence[:, -1, :])).squeeze(-1)


@dataclass
class LstmForecaster:
    """A trained :class:`PeakLstm` with its input scale; ``predict`` takes per-second history."""

    model: PeakLstm
    scale: float
    """The training targets' 99th percentile: the divisor of a ``global`` model."""
    normalisation: str = "window"
    """``window``: each window by its own level (scale-free); ``global``: every window by ``scale``."""
    buckets: int = 12
    bucket_s: int = 10
    margin: float = 0.0
    name: str = "lstm"

    def predict(self, history: np.ndarray) -> float:
        values = np.asarray(history, dtype=float)
        if values.size == 0 or not np.isfinite(values).all():
            raise ValueError("the LSTM needs a finite, non-empty load history")
        peaks = bucket_maxima(values, self.bucket_s)[-self.buckets :]
        if peaks.size < self.buckets:
            # Less than two minutes of history: IPA's backup, the maximum so far.
            return max(0.0, float(values.max())) * (1.0 + self.margin)
        return float(self.predict_windows(peaks[None, :])[0]) * (1.0 + self.margin)

    def predict_windows(self, inputs: np.ndarray) -> np.ndarray:
        """Forecasts for many windows of bucket maxima at once (evaluation)."""
        values = np.asarray(inputs, dtype=np.float32)
        level = window_levels(values) if self.normalisation == "window" else np.float32(self.scale)
        self.model.eval()
        with torch.inference_mode():
            x = torch.as_tensor(values / level)
            return np.maximum(self.model(x).numpy() * np.ravel(level), 0.0)

    def save(self, path: Path) -> None:
        saved = {"state": self.model.state_dict(), "scale": self.scale, "buckets": self.buckets}
        torch.save({**saved, "normalisation": self.normalisation}, path)

    @classmethod
    def load(cls, path: Path) -> LstmForecaster:
        saved = torch.load(path, weights_only=True)
        model = PeakLstm()
        model.load_state_dict(saved["state"])
        return cls(
            model=model,
            scale=float(saved["scale"]),
            normalisation=str(saved.get("normalisation", "global")),  # files from before had one scale
            buckets=int(saved["buckets"]),
        )


def window_levels(inputs: np.ndarray) -> np.ndarray:
    """The divisor of each window (one row of bucket maxima): its peak, at least 1 request/s so that an idle
    window is not blown up into noise; shape (n, 1)."""
    return np.maximum(np.asarray(inputs, dtype=np.float32).max(axis=1, keepdims=True), np.float32(1.0))


def train_lstm(
    inputs: np.ndarray,
    targets: np.ndarray,
    *,
    epochs: int = 30,
    batch_size: int = 64,
    seed: int = 7,
    on_epoch: Callable[[int, float], None] | None = None,
) -> LstmForecaster:
    """Fit on windows from :func:`~ipa_tasks.forecasting.windows.training_windows`.

    ``on_epoch(epoch, loss)`` is called after every epoch (1-based) with its mean training loss (MSE of the
    peak as a multiple of the window's level), for progress reports; it does not change what is trained.
    """
    if len(inputs) == 0 or len(inputs) != len(targets):
        raise ValueError(f"need as many targets as input windows, got {len(inputs)} and {len(targets)}")
    torch.manual_seed(seed)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        scale = float(max(np.percentile(targets, 99), 1.0))
        values = np.asarray(inputs, dtype=np.float32)
        level = window_levels(values)
        x = torch.as_tensor(values / level)
        y = torch.as_tensor(np.asarray(targets, dtype=np.float32) / level[:, 0])
        model = PeakLstm()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        generator = torch.Generator().manual_seed(seed)
        model.train()
        for epoch in range(1, epochs + 1):
            total = 0.0
            for batch in torch.randperm(len(x), generator=generator).split(batch_size):
                optimizer.zero_grad()
                loss = nn.functional.mse_loss(model(x[batch]), y[batch])
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(batch)
            if on_epoch is not None:
                on_epoch(epoch, total / len(x))
    finally:
        torch.set_num_threads(previous_threads)
    return LstmForecaster(model=model, scale=scale, buckets=x.shape[1])
