"""Deterministic strips of real handwritten digits, with their true boxes and digit strings.

Each strip composes 2-5 MNIST digits left to right at varied scale, ink intensity and height, often touching
or overlapping, then adds clutter strokes, specks, blur, an uneven background and noise. The digits are
real handwriting; the composition is synthetic. Training and calibration strips use only the training digits
and validation strips only the validation digits (:func:`~.mnist.split_digits`), so no handwritten digit is
on both sides.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cache

import numpy as np
from scipy.ndimage import gaussian_filter

from ipa_tasks.demo_pipelines.digit_strips.boxes import Box, sample_squares
from ipa_tasks.demo_pipelines.digit_strips.mnist import DigitSet, split_digits

INK_THRESHOLD = 0.3
"""A glyph pixel at least this bright counts as ink for the digit's true box."""


@dataclass(frozen=True)
class SceneConfig:
    """How hard the strips are. The defaults are what the shipped variants were built and scored on."""

    height: int = 48
    width: int = 128
    min_digits: int = 2
    max_digits: int = 5
    scale: tuple[float, float] = (0.75, 1.25)
    """Digit size relative to MNIST's 20-pixel ink box."""
    gap: tuple[float, float] = (-3.0, 4.0)
    """Pixels between neighbouring ink boxes at scale 1; negative overlaps."""
    min_centre_distance: float = 0.65
    """Neighbouring box centres at least this x the mean digit height apart, so the left-to-right order
    of the string is well defined."""
    vertical_jitter: float = 5.0
    intensity: tuple[float, float] = (0.55, 1.0)
    strokes: tuple[int, int] = (0, 2)
    specks: tuple[int, int] = (0, 3)
    blur: tuple[float, float] = (0.0, 1.0)
    noise: tuple[float, float] = (0.05, 0.15)
    background: float = 0.25
    """Largest brightness of the background's linear ramp."""


@dataclass(frozen=True)
class SceneSet:
    strips: np.ndarray
    """(n, height, width) float32 in [0, 1]."""
    boxes: tuple[tuple[Box, ...], ...]
    """Per strip, the true ink boxes, left to right."""
    strings: tuple[str, ...]
    """Per strip, the digits left to right."""

    def __len__(self) -> int:
        return len(self.strings)


GLYPH_SIZE = 40
"""Every scaled glyph is resampled onto a canvas this big (room for scale 1.4), so all digits of a strip are
scaled in one vectorised call."""


def _scaled_glyphs(digits: DigitSet, chosen: np.ndarray, scales: np.ndarray) -> np.ndarray:
    centre = np.full(len(chosen), 14.0, dtype=np.float32)
    side = (GLYPH_SIZE / scales).astype(np.float32)
    which = np.arange(len(chosen))
    return sample_squares(digits.images[chosen], which, centre, centre, side, GLYPH_SIZE)


def _ink_box(glyph: np.ndarray) -> tuple[int, int, int, int]:
    ink = glyph >= INK_THRESHOLD * glyph.max()
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def _window(canvas: np.ndarray, y0: float, x0: float, y1: float, x1: float):
    """The canvas region (and its pixel coordinates) covering [y0, y1) x [x0, x1): clutter is drawn
    there only, not over the whole strip."""
    height, width = canvas.shape
    top, left = max(int(y0), 0), max(int(x0), 0)
    bottom, right = min(int(np.ceil(y1)) + 1, height), min(int(np.ceil(x1)) + 1, width)
    if top >= bottom or left >= right:
        return None
    yy, xx = np.mgrid[top:bottom, left:right].astype(np.float32)
    return canvas[top:bottom, left:right], yy, xx


def _stroke(canvas: np.ndarray, rng: np.random.Generator) -> None:
    """A clutter polyline, anti-aliased: digit-like strokes that are not digits."""
    height, width = canvas.shape
    points = [np.array([rng.uniform(0, height), rng.uniform(0, width)])]
    for _ in range(int(rng.integers(1, 3))):
        angle = rng.uniform(0, 2 * np.pi)
        length = rng.uniform(6, 22)
        points.append(points[-1] + length * np.array([np.sin(angle), np.cos(angle)]))
    thickness = rng.uniform(0.5, 1.2)
    level = rng.uniform(0.3, 0.8)
    for a, b in itertools.pairwise(points):
        margin = thickness + 1
        found = _window(
            canvas,
            min(a[0], b[0]) - margin,
            min(a[1], b[1]) - margin,
            max(a[0], b[0]) + margin,
            max(a[1], b[1]) + margin,
        )
        if found is None:
            continue
        region, yy, xx = found
        d = b - a
        t = np.clip(((yy - a[0]) * d[0] + (xx - a[1]) * d[1]) / max(float(d @ d), 1e-6), 0, 1)
        dist = np.hypot(yy - (a[0] + t * d[0]), xx - (a[1] + t * d[1]))
        np.maximum(region, level * np.clip(thickness - dist + 0.5, 0, 1), out=region)


def _speck(canvas: np.ndarray, rng: np.random.Generator) -> None:
    height, width = canvas.shape
    cy, cx = rng.uniform(0, height), rng.uniform(0, width)
    radius = rng.uniform(1.0, 3.0)
    level = rng.uniform(0.4, 1.0)
    found = _window(canvas, cy - 3 * radius, cx - 3 * radius, cy + 3 * radius, cx + 3 * radius)
    if found is not None:
        region, yy, xx = found
        np.maximum(region, level * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2)), out=region)


def _layout(
    glyphs: list[np.ndarray],
    inks: list[tuple[int, int, int, int]],
    scales: np.ndarray,
    rng: np.random.Generator,
    config: SceneConfig,
) -> list[float] | None:
    """Left edges of the ink boxes, or None when the digits do not fit the strip."""
    widths = [ink[3] - ink[1] for ink in inks]
    mean_height = float(np.mean([ink[2] - ink[0] for ink in inks]))
    lefts = [0.0]
    for i in range(1, len(glyphs)):
        gap = rng.uniform(*config.gap) * (scales[i - 1] + scales[i]) / 2
        left = lefts[-1] + widths[i - 1] + gap
        # Keep centres apart so that "left to right" is unambiguous for the string and the scorer.
        least = lefts[-1] + widths[i - 1] / 2 + config.min_centre_distance * mean_height - widths[i] / 2
        lefts.append(max(left, least))
    span = lefts[-1] + widths[-1]
    if span > config.width - 4:
        return None
    offset = rng.uniform(2, config.width - 2 - span)
    return [left + offset for left in lefts]


def _compose(
    digits: DigitSet, rng: np.random.Generator, config: SceneConfig
) -> tuple[np.ndarray, list[Box], str]:
    count = int(rng.integers(config.min_digits, config.max_digits + 1))
    while True:
        chosen = rng.integers(0, len(digits), size=count)
        scales = rng.uniform(*config.scale, size=count)
        glyphs = list(_scaled_glyphs(digits, chosen, scales))
        inks = [_ink_box(g) for g in glyphs]
        lefts = _layout(glyphs, inks, scales, rng, config)
        if lefts is not None:
            break
        count = max(config.min_digits, count - 1)
    height, width = config.height, config.width
    canvas = np.zeros((height, width), dtype=np.float32)
    baseline = rng.uniform(0.35, 0.65) * height
    boxes = []
    for glyph, ink, left in zip(glyphs, inks, lefts, strict=True):
        ink_h = ink[2] - ink[0]
        centre_y = baseline + rng.uniform(-config.vertical_jitter, config.vertical_jitter)
        top = int(np.clip(round(centre_y - ink_h / 2), 1, height - 1 - ink_h))
        x = round(left)
        gy, gx = top - ink[0], x - ink[1]
        size = glyph.shape[0]
        ys, xs = slice(max(gy, 0), min(gy + size, height)), slice(max(gx, 0), min(gx + size, width))
        patch = glyph[ys.start - gy : ys.stop - gy, xs.start - gx : xs.stop - gx]
        level = rng.uniform(*config.intensity)
        np.maximum(canvas[ys, xs], level * patch, out=canvas[ys, xs])
        boxes.append(Box(float(x), float(top), float(x + ink[3] - ink[1]), float(top + ink_h)))
    for _ in range(int(rng.integers(config.strokes[0], config.strokes[1] + 1))):
        _stroke(canvas, rng)
    for _ in range(int(rng.integers(config.specks[0], config.specks[1] + 1))):
        _speck(canvas, rng)
    sigma = rng.uniform(*config.blur)
    if sigma > 0.3:
        canvas = gaussian_filter(canvas, sigma)
    ramp_y, ramp_x = rng.uniform(-1, 1, size=2)
    ramp = ramp_y * np.linspace(-0.5, 0.5, height, dtype=np.float32)[:, None]
    ramp = ramp + ramp_x * np.linspace(-0.5, 0.5, width, dtype=np.float32)[None, :]
    canvas += config.background * rng.uniform(0, 1) * (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    canvas += rng.normal(0, rng.uniform(*config.noise), size=canvas.shape).astype(np.float32)
    string = "".join(str(int(digits.labels[i])) for i in chosen)
    return np.clip(canvas, 0, 1).astype(np.float32), boxes, string


def generate_scenes(digits: DigitSet, count: int, seed: int, config: SceneConfig = SceneConfig()) -> SceneSet:
    """``count`` strips from ``digits``, the same for the same arguments. Strips are drawn one after the
    other from one random stream, so fewer strips of a seed are a prefix of more."""
    rng = np.random.default_rng(seed)
    strips = np.empty((count, config.height, config.width), dtype=np.float32)
    boxes: list[tuple[Box, ...]] = []
    strings: list[str] = []
    for i in range(count):
        strips[i], strip_boxes, string = _compose(digits, rng, config)
        boxes.append(tuple(strip_boxes))
        strings.append(string)
    return SceneSet(strips=strips, boxes=tuple(boxes), strings=tuple(strings))


TRAIN_SEED = 1
VALIDATION_SEED = 2
CALIBRATION_SEED = 3
TRAIN_SCENES = 3000
VALIDATION_SCENES = 600
CALIBRATION_SCENES = 400


@cache
def train_scenes(count: int = TRAIN_SCENES) -> SceneSet:
    return generate_scenes(split_digits()[0], count, TRAIN_SEED)


@cache
def calibration_scenes(count: int = CALIBRATION_SCENES) -> SceneSet:
    """Fresh strips of training digits for choosing decoding settings, never of validation digits."""
    return generate_scenes(split_digits()[0], count, CALIBRATION_SEED)


@cache
def validation_scenes(count: int = VALIDATION_SCENES) -> SceneSet:
    return generate_scenes(split_digits()[1], count, VALIDATION_SEED)
