"""Building, loading through the spec, the end-to-end table and reading strips, on the cheap variants."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ipa_tasks.accuracy import product_accuracy
from ipa_tasks.demo_pipelines.digit_strips import (
    CLASSIFIERS,
    DETECTORS,
    PIPELINE,
    Box,
    Detections,
    DigitStripsPipeline,
    det_fcn_l,
    read_strip,
    read_strips,
)
from ipa_tasks.demo_pipelines.digit_strips.reading import exact_match_rate, strings_from_detections
from ipa_tasks.spec import load_spec, shipped_specs_dir
from ipa_tasks.variant_cache import BUILD_RECORD, ensure_built
from ipa_tasks.variants import ScoredVariant, VariantLoadError, accuracy, load_variant
from tests.demo_pipelines.digit_strips.conftest import BuiltHome

SPEC = shipped_specs_dir() / "digit-strips.yaml"


def test_the_spec_names_every_variant_by_its_factory() -> None:
    spec = load_spec(SPEC)
    assert spec.name == PIPELINE.name
    assert [s.name for s in spec.stages] == ["detect", "classify"]
    assert tuple(v.name for v in spec.stage("detect").variants) == DETECTORS
    assert tuple(v.name for v in spec.stage("classify").variants) == CLASSIFIERS
    for stage in spec.stages:
        for variant in stage.variants:
            assert variant.model.kind == "python"
            assert variant.model.uri == f"ipa_tasks.demo_pipelines.digit_strips:{variant.name}"


def test_built_variants_load_through_the_spec_with_the_same_accuracy(in_digit_home: BuiltHome) -> None:
    spec = load_spec(SPEC)
    for stage, built in (("detect", in_digit_home.detector), ("classify", in_digit_home.classifier)):
        variant = load_variant(spec.stage(stage).variant(built.variant).model)
        assert accuracy(variant, *variant.held_out()) == pytest.approx(built.accuracy)
        record = json.loads((built.directory / BUILD_RECORD).read_text())
        assert record["recipe_version"] == PIPELINE.recipe_version
    detector = load_variant(spec.stage("detect").variant("det_cc").model)
    assert isinstance(detector, ScoredVariant)
    strips, boxes = detector.held_out()
    assert len(strips) == len(boxes) == PIPELINE.validation_strips
    assert 0.1 < in_digit_home.detector.accuracy < 0.6
    assert in_digit_home.classifier.accuracy > 0.75
    assert in_digit_home.classifier.params["parameters"] > 0


def test_a_second_build_is_found_in_the_cache(in_digit_home: BuiltHome) -> None:
    cache = in_digit_home.home / "variants"
    again, fresh = ensure_built(cache, PIPELINE, "classify", "cls_mlp_s", lambda _: None)
    assert not fresh
    assert again.accuracy == in_digit_home.classifier.accuracy


def test_an_unbuilt_variant_says_how_to_build_it(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IPA_HOME", str(tmp_path))
    with pytest.raises(VariantLoadError, match="run: ipa build-variants digit-strips --variants det_fcn_l"):
        det_fcn_l()


def test_end_to_end_accuracy_is_measured_not_multiplied(in_digit_home: BuiltHome) -> None:
    directories = {
        ("detect", "det_cc"): in_digit_home.detector.directory,
        ("classify", "cls_mlp_s"): in_digit_home.classifier.directory,
    }
    table = PIPELINE.end_to_end_accuracy([("det_cc", "cls_mlp_s")], directories, lambda _: None)
    measured = table.lookup(("det_cc", "cls_mlp_s"))
    assert measured is not None
    product = product_accuracy([in_digit_home.detector.accuracy, in_digit_home.classifier.accuracy])
    # A strip needs every one of its ~3.5 digits read right, and det_cc's crops are worse than true boxes.
    assert measured < product - 0.05

    # The table is exactly what reading the validation strips one configuration at a time gives.
    detector = PIPELINE.load_variant("detect", "det_cc", in_digit_home.detector.directory)
    classifier = PIPELINE.load_variant("classify", "cls_mlp_s", in_digit_home.classifier.directory)
    scenes = PIPELINE.validation()
    read = read_strips(detector, classifier, scenes.strips)
    assert measured == sum(r == s for r, s in zip(read, scenes.strings, strict=True)) / len(scenes)
    assert read_strip(detector, classifier, scenes.strips[0]) == read[0]


def test_unknown_variants_and_stages_are_rejected(in_digit_home: BuiltHome) -> None:
    with pytest.raises(KeyError, match="no variant 'det_yolo'"):
        PIPELINE.end_to_end_accuracy([("det_yolo", "cls_mlp_s")], {}, lambda _: None)
    with pytest.raises(KeyError, match="no stage 'segment'"):
        PIPELINE.load_variant("segment", "det_cc", in_digit_home.detector.directory)


def test_fewer_validation_strips_are_a_prefix_under_another_recipe() -> None:
    small = DigitStripsPipeline(validation_strips=50)
    assert (PIPELINE.training_strips, PIPELINE.validation_strips) == (3000, 600)
    assert small.recipe_version != PIPELINE.recipe_version
    assert np.array_equal(small.validation().strips, PIPELINE.validation().strips[:50])
    assert small.validation().strings == PIPELINE.validation().strings[:50]


class _LabelsInOrder:
    """Labels crop i with digit i % 10, so the order crops reach the classifier is visible."""

    def predict(self, items):
        return [i % 10 for i in range(len(items))]

    def held_out(self):
        return [], []


def test_strings_are_read_left_to_right_over_one_classifier_call() -> None:
    def detections(count: int) -> Detections:
        boxes = tuple(Box(10.0 * i, 0.0, 10.0 * i + 8, 20.0) for i in range(count))
        return Detections(boxes, np.zeros((count, 28, 28), dtype=np.float32))

    read = strings_from_detections([detections(3), detections(0), detections(2)], _LabelsInOrder())
    assert read == ["012", "", "34"]
    assert strings_from_detections([detections(0)], _LabelsInOrder()) == [""]
    assert exact_match_rate(read, ["012", "", "35"]) == pytest.approx(2 / 3)
