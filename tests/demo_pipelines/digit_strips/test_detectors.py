"""The detectors: det_cc on easy strips, and the exact-detection score on hand-made predictions."""

from __future__ import annotations

import numpy as np
import pytest

from ipa_tasks.demo_pipelines.digit_strips.boxes import Box, match_centres
from ipa_tasks.demo_pipelines.digit_strips.detectors import (
    ComponentDetector,
    ComponentSettings,
    Detections,
    detection_accuracy,
)
from ipa_tasks.demo_pipelines.digit_strips.mnist import split_digits
from ipa_tasks.demo_pipelines.digit_strips.scenes import SceneConfig, generate_scenes

EASY = SceneConfig(
    min_digits=2,
    max_digits=4,
    scale=(1.0, 1.0),
    gap=(6.0, 10.0),
    vertical_jitter=0.0,
    intensity=(1.0, 1.0),
    strokes=(0, 0),
    specks=(0, 0),
    blur=(0.0, 0.0),
    noise=(0.0, 0.0),
    background=0.0,
)


def test_det_cc_finds_every_digit_of_clean_easy_strips() -> None:
    scenes = generate_scenes(split_digits()[1], 50, seed=3, config=EASY)
    detector = ComponentDetector(ComponentSettings(), scenes)
    found = detector.predict(scenes.strips)
    for detections, truth in zip(found, scenes.boxes, strict=True):
        assert match_centres(detections.boxes, truth) == len(truth), "every digit is found"
        assert detections.crops.shape == (len(detections.boxes), 28, 28)
        assert [b.cx for b in detections.boxes] == sorted(b.cx for b in detections.boxes)
        # The only extra boxes are halves of a digit wider than it is tall, which det_cc takes for two
        # touching digits: they lie inside a true box.
        for box in detections.boxes:
            assert any(t.x0 - 1 <= box.x0 and box.x1 <= t.x1 + 1 for t in truth)
    assert detector.score(found, scenes.boxes) >= 0.8


def test_det_cc_predicts_from_a_list_of_strips_as_from_an_array() -> None:
    scenes = generate_scenes(split_digits()[1], 5, seed=3, config=EASY)
    detector = ComponentDetector(ComponentSettings(), scenes)
    from_array = detector.predict(scenes.strips)
    from_list = detector.predict([strip.astype(np.float64) for strip in scenes.strips])
    assert [d.boxes for d in from_array] == [d.boxes for d in from_list]


def _at(cx: float, cy: float = 24.0) -> Box:
    return Box(cx - 6, cy - 10, cx + 6, cy + 10)


TRUTH = (_at(20), _at(40), _at(60))


def _detections(*boxes: Box) -> Detections:
    return Detections(tuple(boxes), np.zeros((len(boxes), 28, 28), dtype=np.float32))


@pytest.mark.parametrize(
    ("predicted", "exact"),
    [
        ((_at(20), _at(40), _at(60)), True),
        ((_at(23), _at(36), _at(64, cy=27)), True),  # every centre within 7 px
        ((_at(20), _at(60)), False),  # a miss
        ((_at(20), _at(40), _at(60), _at(90)), False),  # an extra box
        ((_at(20), _at(40), _at(68)), False),  # a centre 8 px off
        ((_at(20), _at(40), _at(40)), False),  # two boxes on one digit, none on another
        ((), False),
    ],
)
def test_a_strip_counts_only_when_detected_exactly(predicted: tuple[Box, ...], exact: bool) -> None:
    assert detection_accuracy([_detections(*predicted)], [TRUTH]) == float(exact)


def test_detection_accuracy_is_the_fraction_of_exact_strips() -> None:
    predictions = [_detections(*TRUTH), _detections(*TRUTH[:2]), _detections(*TRUTH), _detections()]
    assert detection_accuracy(predictions, [TRUTH, TRUTH, TRUTH, ()]) == 0.75
    with pytest.raises(ValueError, match="predictions"):
        detection_accuracy(predictions, [TRUTH])
