"""Test-only model variants: classifiers of scikit-learn's bundled 8x8 digits.

The data ships inside scikit-learn, so the tests profile real models on real held-out data without any
download. The split and the seeds are fixed, so the held-out accuracy is the same on every run.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier

SEED = 0
TEST_FRACTION = 0.3


@dataclass(frozen=True)
class DigitsVariant:
    """A fitted classifier and the held-out split it never saw."""

    model: ClassifierMixin
    test_inputs: np.ndarray
    test_labels: np.ndarray

    def predict(self, items: Sequence[Any]) -> list[Any]:
        return self.model.predict(np.asarray(items, dtype=float)).tolist()

    def held_out(self) -> tuple[Sequence[Any], Sequence[Any]]:
        return self.test_inputs, self.test_labels


def split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train inputs, held-out inputs, train labels, held-out labels (stratified, seeded)."""
    inputs, labels = load_digits(return_X_y=True)
    # Pixels are 0..16; scaling them to [0, 1] lets the solver converge within max_iter.
    return train_test_split(
        inputs / 16.0, labels, test_size=TEST_FRACTION, random_state=SEED, stratify=labels
    )


# Cached because several tests load the same variant and training takes a while.
@cache
def logistic() -> DigitsVariant:
    """Logistic regression: the test spec's main variant."""
    train_x, test_x, train_y, test_y = split()
    model = LogisticRegression(max_iter=200, random_state=SEED).fit(train_x, train_y)
    return DigitsVariant(model=model, test_inputs=test_x, test_labels=test_y)


@cache
def nearest_neighbors() -> DigitsVariant:
    """k-nearest neighbours, whose batch cost grows with the batch (logistic regression's hardly does)."""
    train_x, test_x, train_y, test_y = split()
    model = KNeighborsClassifier(algorithm="brute").fit(train_x, train_y)
    return DigitsVariant(model=model, test_inputs=test_x, test_labels=test_y)


@dataclass(frozen=True)
class WithItemCost:
    """A variant's real predictions, plus a fixed cost per item: its batch latency rises by
    ``per_item_s`` an item, well above the timing noise of a busy machine, so a test that checks the
    profile's shape does not depend on how a sub-millisecond model's overhead wobbles."""

    variant: DigitsVariant
    per_item_s: float

    def predict(self, items: Sequence[Any]) -> list[Any]:
        time.sleep(self.per_item_s * len(items))
        return self.variant.predict(items)

    def held_out(self) -> tuple[Sequence[Any], Sequence[Any]]:
        return self.variant.held_out()


def nearest_neighbors_with_item_cost() -> WithItemCost:
    return WithItemCost(nearest_neighbors(), per_item_s=0.0005)


def not_a_variant() -> object:
    """A factory whose result lacks ``predict`` and ``held_out``, for the loader's error path."""
    return object()


@dataclass(frozen=True)
class FasterWithBiggerBatches:
    """A broken measurement on purpose: a batch takes 5 ms / batch size, so latency falls as batches grow,
    which the profile check must reject."""

    def predict(self, items: Sequence[Any]) -> list[Any]:
        time.sleep(0.005 / len(items))
        return [0] * len(items)

    def held_out(self) -> tuple[Sequence[Any], Sequence[Any]]:
        return [0] * 10, [0] * 10


def faster_with_bigger_batches() -> FasterWithBiggerBatches:
    return FasterWithBiggerBatches()
