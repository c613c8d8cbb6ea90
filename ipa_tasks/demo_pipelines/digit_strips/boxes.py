"""Boxes around digits, the 28x28 crops cut around them, and the centre-matching rule that scores them."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CROP_SIZE = 28
CROP_MARGIN = 28 / 20
"""MNIST fits each digit's ink into the central 20x20 of a 28x28 frame; a crop of side 1.4 x the box's longer
side gives the classifier the framing it was trained on, whatever the digit's scale in the strip."""
MATCH_DISTANCE = 7.0
"""A detection matches a true digit when their box centres are at most this many pixels apart."""


@dataclass(frozen=True)
class Box:
    """A digit's ink box in strip pixels; x1 and y1 are exclusive."""

    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def cx(self) -> float:
        return (self.x0 + self.x1) / 2

    @property
    def cy(self) -> float:
        return (self.y0 + self.y1) / 2

    @property
    def side(self) -> float:
        return max(self.x1 - self.x0, self.y1 - self.y0)


SAMPLE_CHUNK = 1024
"""Windows resampled per vectorised pass: bounds the index arrays (a few MB per 1,000 windows) when a
whole training set is cropped at once."""


def sample_squares(
    images: np.ndarray, which: np.ndarray, cy: np.ndarray, cx: np.ndarray, side: np.ndarray, size: int
) -> np.ndarray:
    """Bilinear resampling of square windows (centre ``cy, cx``, side ``side``) of ``images[which]`` to
    ``size`` x ``size``; outside the image reads as 0. Vectorised over the windows, because ``predict``
    cuts every crop of a batch at once."""
    which = np.asarray(which, dtype=np.int64)
    cy, cx, side = (np.asarray(a, dtype=np.float32) for a in (cy, cx, side))
    out = np.empty((len(which), size, size), dtype=np.float32)
    if len(which) == 0:
        return out
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1))).reshape(-1)
    for start in range(0, len(which), SAMPLE_CHUNK):
        part = slice(start, start + SAMPLE_CHUNK)
        out[part] = _bilinear(padded, images.shape[1:], which[part], cy[part], cx[part], side[part], size)
    return out


def _bilinear(
    padded: np.ndarray,
    shape: tuple[int, ...],
    which: np.ndarray,
    cy: np.ndarray,
    cx: np.ndarray,
    side: np.ndarray,
    size: int,
) -> np.ndarray:
    height, width = shape
    steps = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    ys = cy[:, None] + steps[None, :] * side[:, None] - 0.5
    xs = cx[:, None] + steps[None, :] * side[:, None] - 0.5
    y_floor = np.floor(ys)
    x_floor = np.floor(xs)
    wy = (ys - y_floor)[:, :, None]
    wx = (xs - x_floor)[:, None, :]
    row = width + 2
    # Flat indices into the zero-bordered images, clamped onto the border so far-outside samples read 0;
    # np.take on flat indices is several times faster than 3-D fancy indexing.
    y0 = np.clip(y_floor.astype(np.int64) + 1, 0, height + 1) * row
    y1 = np.clip(y_floor.astype(np.int64) + 2, 0, height + 1) * row
    x0 = np.clip(x_floor.astype(np.int64) + 1, 0, width + 1)
    x1 = np.clip(x_floor.astype(np.int64) + 2, 0, width + 1)
    base = (which * (height + 2) * row)[:, None]
    r0 = (base + y0)[:, :, None]
    r1 = (base + y1)[:, :, None]
    c0, c1 = x0[:, None, :], x1[:, None, :]
    top = padded.take(r0 + c0) * (1 - wx) + padded.take(r0 + c1) * wx
    bottom = padded.take(r1 + c0) * (1 - wx) + padded.take(r1 + c1) * wx
    return top * (1 - wy) + bottom * wy


def crop_boxes(strips: np.ndarray, boxes: Sequence[Sequence[Box]]) -> list[np.ndarray]:
    """Per strip, a (k, 28, 28) array: one crop per box, in the order of ``boxes``."""
    which = np.array([i for i, strip_boxes in enumerate(boxes) for _ in strip_boxes], dtype=np.int64)
    flat = [box for strip_boxes in boxes for box in strip_boxes]
    crops = sample_squares(
        strips,
        which,
        np.array([b.cy for b in flat], dtype=np.float32),
        np.array([b.cx for b in flat], dtype=np.float32),
        np.array([b.side * CROP_MARGIN for b in flat], dtype=np.float32),
        CROP_SIZE,
    )
    bounds = np.cumsum([0, *(len(b) for b in boxes)])
    return [crops[start:end] for start, end in itertools.pairwise(bounds)]


def match_centres(predicted: Sequence[Box], truth: Sequence[Box], distance: float = MATCH_DISTANCE) -> int:
    """How many true boxes a prediction claims: greedily, closest pairs first, one prediction per truth,
    centres at most ``distance`` apart."""
    pairs = sorted(
        (float(np.hypot(p.cx - t.cx, p.cy - t.cy)), i, j)
        for i, p in enumerate(predicted)
        for j, t in enumerate(truth)
    )
    used_p: set[int] = set()
    used_t: set[int] = set()
    for d, i, j in pairs:
        if d > distance:
            break
        if i not in used_p and j not in used_t:
            used_p.add(i)
            used_t.add(j)
    return len(used_t)


def exact_detection(predicted: Sequence[Box], truth: Sequence[Box]) -> bool:
    """Every true digit found within :data:`MATCH_DISTANCE` and nothing else detected."""
    return len(predicted) == len(truth) and match_centres(predicted, truth) == len(truth)


def exact_detection_rate(predicted: Sequence[Sequence[Box]], truth: Sequence[Sequence[Box]]) -> float:
    """Fraction of strips whose boxes are an :func:`exact_detection` of their true boxes."""
    hits = sum(exact_detection(p, t) for p, t in zip(predicted, truth, strict=True))
    return hits / len(truth)
