"""Strip generation: deterministic, boxes and strings agree, digits split between train and validation."""

from __future__ import annotations

import numpy as np

from ipa_tasks.demo_pipelines.digit_strips.boxes import CROP_SIZE, sample_squares
from ipa_tasks.demo_pipelines.digit_strips.mnist import split_digits
from ipa_tasks.demo_pipelines.digit_strips.scenes import SceneConfig, generate_scenes


def test_same_seed_gives_the_same_strips_and_another_seed_does_not() -> None:
    digits = split_digits()[1]
    first = generate_scenes(digits, 25, seed=7)
    again = generate_scenes(digits, 25, seed=7)
    other = generate_scenes(digits, 25, seed=8)
    assert np.array_equal(first.strips, again.strips)
    assert first.boxes == again.boxes
    assert first.strings == again.strings
    assert not np.array_equal(first.strips, other.strips)


def test_boxes_and_strings_agree() -> None:
    config = SceneConfig()
    scenes = generate_scenes(split_digits()[1], 60, seed=11, config=config)
    assert scenes.strips.shape == (60, config.height, config.width)
    assert scenes.strips.dtype == np.float32
    assert scenes.strips.min() >= 0.0 and scenes.strips.max() <= 1.0
    for strip, boxes, string in zip(scenes.strips, scenes.boxes, scenes.strings, strict=True):
        assert config.min_digits <= len(string) <= config.max_digits
        assert string.isdigit() and len(boxes) == len(string)
        centres = [b.cx for b in boxes]
        assert centres == sorted(centres), "boxes must run left to right, like the string"
        for box in boxes:
            assert 0 <= box.x0 < box.x1 <= config.width and 0 <= box.y0 < box.y1 <= config.height
            # Each box holds ink: its brightest pixel stands clear of the background.
            region = strip[int(box.y0) : int(box.y1), int(box.x0) : int(box.x1)]
            assert region.max() > 0.4


def test_no_handwritten_digit_is_in_both_train_and_validation() -> None:
    train, validation = split_digits()
    assert (len(train), len(validation)) == (4000, 1000)
    assert np.bincount(validation.labels).tolist() == [100] * 10
    seen = {image.tobytes() for image in train.images}
    assert not any(image.tobytes() in seen for image in validation.images)


def test_a_crop_of_the_whole_frame_reproduces_the_image() -> None:
    image = split_digits()[1].images[:1]
    centre = np.array([14.0], dtype=np.float32)
    crop = sample_squares(image, np.array([0]), centre, centre, np.array([28.0], dtype=np.float32), CROP_SIZE)
    assert np.allclose(crop[0], image[0], atol=1e-5)
    shifted = sample_squares(image, np.array([0]), centre, centre + 100, np.array([28.0]), CROP_SIZE)
    assert not shifted.any(), "outside the image reads as zero"
