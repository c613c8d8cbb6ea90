"""What the router hands from one demo stage to the next, through the stage servers' JSON codec."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ipa_tasks.demo_pipelines.digit_strips.boxes import Box
from ipa_tasks.demo_pipelines.digit_strips.detectors import Detections
from ipa_tasks.demo_pipelines.handoffs import digit_strips, handoff_for, language_routing
from ipa_tasks.serving.stage_server import decode_item, encode_item


def over_the_wire(value):
    return decode_item(json.loads(json.dumps(encode_item(value))))


def test_the_detectors_crops_become_the_classifiers_items_in_reading_order():
    crops = np.stack([np.full((28, 28), i, dtype=np.float32) for i in range(3)])
    boxes = tuple(Box(10.0 * i, 0.0, 10.0 * i + 8, 28.0) for i in range(3))
    first = Detections(boxes=boxes, crops=crops)
    empty = Detections(boxes=(), crops=np.zeros((0, 28, 28), dtype=np.float32))
    items = digit_strips("detect", ["strip 1", "strip 2"], [over_the_wire(first), over_the_wire(empty)])
    assert [float(item[0, 0]) for item in items] == [0.0, 1.0, 2.0]
    assert all(item.shape == (28, 28) and item.dtype == np.float32 for item in items)


def test_the_identifiers_language_travels_with_its_text():
    assert language_routing("identify", ["Hallo", "Hi"], ["de", "en"]) == [["de", "Hallo"], ["en", "Hi"]]
    with pytest.raises(ValueError, match="2 languages for 1 texts"):
        language_routing("identify", ["Hallo"], ["de", "en"])


def test_only_the_demo_pipelines_have_a_handoff():
    assert handoff_for("digit-strips") is digit_strips and handoff_for("video") is None
