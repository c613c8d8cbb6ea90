"""Reading whole strips: a detector's crops fed to a classifier, labels read left to right.

This is the end-to-end path the accuracy table measures and the serving runtime runs, so both share it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ipa_tasks.demo_pipelines.digit_strips.detectors import Detections
from ipa_tasks.variants import LoadedVariant


def strings_from_detections(detections: Sequence[Detections], classifier: LoadedVariant) -> list[str]:
    """The digit string of each strip: every crop of every strip classified in one call."""
    counts = [len(d.boxes) for d in detections]
    crops = [d.crops for d in detections if len(d.boxes)]
    if not crops:
        return ["" for _ in detections]
    labels = classifier.predict(np.concatenate(crops))
    strings = []
    start = 0
    for count in counts:
        strings.append("".join(str(int(label)) for label in labels[start : start + count]))
        start += count
    return strings


def read_strips(
    detector: LoadedVariant, classifier: LoadedVariant, strips: Sequence[np.ndarray]
) -> list[str]:
    """The digits of each strip, left to right, as the pipeline of ``detector`` then ``classifier`` reads
    them."""
    return strings_from_detections(detector.predict(strips), classifier)


def read_strip(detector: LoadedVariant, classifier: LoadedVariant, strip: np.ndarray) -> str:
    """The digits of one strip (a 2-D float array in [0, 1]), left to right."""
    return read_strips(detector, classifier, [strip])[0]


def exact_match_rate(predicted: Sequence[str], truth: Sequence[str]) -> float:
    """Fraction of strips whose whole string was read exactly: one missed, extra or wrong digit fails it."""
    if len(predicted) != len(truth):
        raise ValueError(f"{len(predicted)} readings for {len(truth)} strips")
    if not truth:
        raise ValueError("no strips to score")
    return sum(p == t for p, t in zip(predicted, truth, strict=True)) / len(truth)
