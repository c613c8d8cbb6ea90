"""Stage 2, ``classify``: read the digit in one 28x28 crop.

Trained on crops cut around the true boxes of the training strips, jittered in position and size (a few
jittered copies, one per epoch in turn), because at serving time the crops come from a detector whose boxes
are a little off; scored on the crops of the validation strips' true boxes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ipa_tasks.demo_pipelines import Log
from ipa_tasks.demo_pipelines.digit_strips.boxes import CROP_MARGIN, CROP_SIZE, Box, sample_squares
from ipa_tasks.demo_pipelines.digit_strips.scenes import SceneSet
from ipa_tasks.demo_pipelines.digit_strips.training import fit, load_weights, parameter_count, save_weights

WEIGHTS_FILE = "model.pt"
CENTRE_JITTER = 0.12
"""Of the crop's side: how far a training crop's centre may sit from the true box centre."""
SIDE_JITTER = (0.85, 1.2)
JITTERED_COPIES = 4
PREDICT_CHUNK = 256


@dataclass(frozen=True)
class ClassifierShape:
    kind: str
    """``mlp``: hidden widths; ``cnn``: conv channels per 2x2-pooled block, then one hidden layer."""
    widths: tuple[int, ...]
    hidden: int = 0
    epochs: int = 4
    learning_rate: float = 2e-3
    batch_size: int = 64


CLASSIFIER_SHAPES = {
    "cls_mlp_s": ClassifierShape("mlp", (32,), epochs=10, batch_size=128),
    "cls_mlp_l": ClassifierShape("mlp", (256, 128), epochs=10, batch_size=128),
    "cls_cnn_m": ClassifierShape("cnn", (16, 32), hidden=64, epochs=3),
    "cls_cnn_l": ClassifierShape("cnn", (32, 64), hidden=128, epochs=3),
}


def standardize(crops: torch.Tensor) -> torch.Tensor:
    """Per-crop zero mean and unit variance: strips differ in ink level, background and noise, and the
    classifier should not have to learn that."""
    flat = crops.flatten(1)
    centred = flat - flat.mean(dim=1, keepdim=True)
    scale = centred.square().mean(dim=1, keepdim=True).sqrt() + 1e-3
    return (centred / scale).view_as(crops)


class Mlp(nn.Module):
    def __init__(self, widths: tuple[int, ...]) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        size = CROP_SIZE * CROP_SIZE
        for width in widths:
            layers += [nn.Linear(size, width), nn.ReLU()]
            size = width
        layers.append(nn.Linear(size, 10))
        self.net = nn.Sequential(*layers)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.net(standardize(crops))


class Cnn(nn.Module):
    def __init__(self, channels: tuple[int, ...], hidden: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        size, previous = CROP_SIZE, 1
        for out in channels:
            layers += [
                nn.Conv2d(previous, out, 3, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            previous, size = out, size // 2
        layers += [nn.Flatten(), nn.Linear(previous * size * size, hidden), nn.ReLU(), nn.Linear(hidden, 10)]
        self.net = nn.Sequential(*layers)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.net(standardize(crops)[:, None].contiguous(memory_format=torch.channels_last))


def make_classifier(shape: ClassifierShape) -> nn.Module:
    if shape.kind == "mlp":
        return Mlp(shape.widths)
    # Channels-last: CPU max-pooling is several times faster on it, and the convolutions no slower.
    return Cnn(shape.widths, shape.hidden).to(memory_format=torch.channels_last)


def _flat_boxes(scenes: SceneSet) -> tuple[np.ndarray, list[Box], np.ndarray]:
    which = np.array([i for i, boxes in enumerate(scenes.boxes) for _ in boxes], dtype=np.int64)
    boxes = [box for strip_boxes in scenes.boxes for box in strip_boxes]
    labels = np.array([int(d) for string in scenes.strings for d in string], dtype=np.int64)
    return which, boxes, labels


def true_box_crops(
    scenes: SceneSet, *, jitter: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The crops around every true box of ``scenes`` (left to right, strip by strip) and their digits;
    with ``jitter``, each crop's centre and size are perturbed at random."""
    which, boxes, labels = _flat_boxes(scenes)
    cy = np.array([b.cy for b in boxes], dtype=np.float32)
    cx = np.array([b.cx for b in boxes], dtype=np.float32)
    side = np.array([b.side * CROP_MARGIN for b in boxes], dtype=np.float32)
    if jitter is not None:
        cy = cy + jitter.uniform(-CENTRE_JITTER, CENTRE_JITTER, len(cy)).astype(np.float32) * side
        cx = cx + jitter.uniform(-CENTRE_JITTER, CENTRE_JITTER, len(cx)).astype(np.float32) * side
        side = side * jitter.uniform(*SIDE_JITTER, len(side)).astype(np.float32)
    return sample_squares(scenes.strips, which, cy, cx, side, CROP_SIZE), labels


def as_crops(items: Sequence[Any]) -> np.ndarray:
    if isinstance(items, np.ndarray) and items.ndim == 3 and items.dtype == np.float32:
        return items
    if len(items) == 0:
        return np.zeros((0, CROP_SIZE, CROP_SIZE), dtype=np.float32)
    return np.stack([np.asarray(item, dtype=np.float32) for item in items])


class DigitClassifier:
    """A trained classifier and the validation crops it is scored on."""

    def __init__(self, model: nn.Module, validation_crops: np.ndarray, validation_labels: np.ndarray) -> None:
        self.model = model.eval()
        self.validation_crops = validation_crops
        self.validation_labels = validation_labels

    def predict(self, items: Sequence[Any]) -> list[int]:
        crops = torch.from_numpy(as_crops(items))
        labels: list[int] = []
        with torch.inference_mode():
            # Chunks keep a large call (a whole validation set) in cache; serving batches are one chunk.
            for start in range(0, len(crops), PREDICT_CHUNK):
                labels += self.model(crops[start : start + PREDICT_CHUNK]).argmax(dim=1).tolist()
        return labels

    def held_out(self) -> tuple[Sequence[Any], Sequence[Any]]:
        return self.validation_crops, self.validation_labels


def _cross_entropy(model: nn.Module, crops: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(crops), labels)


def build_classifier(
    variant: str, train: SceneSet, directory: Path, seed: int, log: Log
) -> dict[str, str | int | float]:
    shape = CLASSIFIER_SHAPES[variant]
    torch.manual_seed(seed)
    model = make_classifier(shape)
    jitter = np.random.default_rng(seed)
    copies: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def epoch_data(epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        # A few jittered copies, cycled: cutting fresh crops every epoch costs the small models more
        # than their training steps.
        key = epoch % JITTERED_COPIES
        if key not in copies:
            crops, labels = true_box_crops(train, jitter=jitter)
            copies[key] = torch.from_numpy(crops), torch.from_numpy(labels)
        return copies[key]

    losses = fit(
        model,
        _cross_entropy,
        epoch_data,
        epochs=shape.epochs,
        batch_size=shape.batch_size,
        learning_rate=shape.learning_rate,
        seed=seed,
        log=log,
        name=variant,
    )
    save_weights(model, directory / WEIGHTS_FILE)
    return {
        "parameters": parameter_count(model),
        "epochs": shape.epochs,
        "training_crops": sum(len(b) for b in train.boxes),
        "final_loss": round(losses[-1], 5),
    }


def load_classifier(
    variant: str, directory: Path, validation_crops: np.ndarray, validation_labels: np.ndarray
) -> DigitClassifier:
    model = load_weights(make_classifier(CLASSIFIER_SHAPES[variant]), directory / WEIGHTS_FILE)
    return DigitClassifier(model, validation_crops, validation_labels)
