"""The digit-strips demo pipeline: build, load and measure its variants (:class:`DemoPipeline`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from ipa_tasks.accuracy import Configuration, MeasuredAccuracyTable
from ipa_tasks.demo_pipelines import BuiltVariant, Log
from ipa_tasks.demo_pipelines.digit_strips import classifiers, detectors
from ipa_tasks.demo_pipelines.digit_strips.reading import exact_match_rate, strings_from_detections
from ipa_tasks.demo_pipelines.digit_strips.scenes import (
    TRAIN_SCENES,
    VALIDATION_SCENES,
    SceneSet,
    calibration_scenes,
    train_scenes,
    validation_scenes,
)
from ipa_tasks.demo_pipelines.digit_strips.training import single_thread
from ipa_tasks.variants import LoadedVariant, accuracy

NAME = "digit-strips"
DETECT = "detect"
CLASSIFY = "classify"
DETECTORS = ("det_cc", "det_fcn_s", "det_fcn_m", "det_fcn_l")
CLASSIFIERS = ("cls_mlp_s", "cls_mlp_l", "cls_cnn_m", "cls_cnn_l")
STAGE_VARIANTS = {DETECT: DETECTORS, CLASSIFY: CLASSIFIERS}
RECIPE = "1"
"""Bump whenever the scenes, the models or their training change: cached variants are then rebuilt."""
SEED = 0
E2E_BATCH = 100
"""Strips per detector call in the end-to-end measurement; bounds the activations held at once."""


class DigitStripsPipeline:
    """Shipped with the default strip counts; tests may ask for fewer validation strips, which changes
    the recipe version so such builds never pass for the shipped ones."""

    name = NAME

    def __init__(
        self, training_strips: int = TRAIN_SCENES, validation_strips: int = VALIDATION_SCENES
    ) -> None:
        self.training_strips = training_strips
        self.validation_strips = validation_strips
        default = (training_strips, validation_strips) == (TRAIN_SCENES, VALIDATION_SCENES)
        self.recipe_version = RECIPE if default else f"{RECIPE}-t{training_strips}-v{validation_strips}"

    def train(self) -> SceneSet:
        return train_scenes(self.training_strips)

    def validation(self) -> SceneSet:
        return validation_scenes(self.validation_strips)

    def build_variant(self, stage: str, variant: str, directory: Path, log: Log) -> BuiltVariant:
        _check(stage, variant)
        started = time.perf_counter()
        if variant == "det_cc":
            params = detectors.build_component_detector(calibration_scenes(), directory, log)
        elif stage == DETECT:
            params = detectors.build_fcn_detector(
                variant, self.train(), calibration_scenes(), directory, SEED, log
            )
        else:
            params = classifiers.build_classifier(variant, self.train(), directory, SEED, log)
        loaded = self.load_variant(stage, variant, directory)
        held_out_accuracy = accuracy(loaded, *loaded.held_out())
        params = {**params, "validation_strips": self.validation_strips, "seed": SEED}
        size = sum(f.stat().st_size for f in directory.iterdir() if f.is_file())
        return BuiltVariant(
            pipeline=NAME,
            stage=stage,
            variant=variant,
            directory=directory,
            accuracy=held_out_accuracy,
            build_seconds=time.perf_counter() - started,
            size_mb=size / 1e6,
            params=params,
        )

    def load_variant(self, stage: str, variant: str, directory: Path) -> LoadedVariant:
        _check(stage, variant)
        if variant == "det_cc":
            return detectors.load_component_detector(directory, self.validation())
        if stage == DETECT:
            return detectors.load_fcn_detector(variant, directory, self.validation())
        crops, labels = classifiers.true_box_crops(self.validation())
        return classifiers.load_classifier(variant, directory, crops, labels)

    def end_to_end_accuracy(
        self, configurations: Sequence[Configuration], directories: dict[tuple[str, str], Path], log: Log
    ) -> MeasuredAccuracyTable:
        """Exact string match on every validation strip. Each detector runs once; its crops are reused
        for every classifier paired with it."""
        for configuration in configurations:
            if len(configuration) != 2:
                raise ValueError(f"a configuration names a detector and a classifier, got {configuration}")
            _check(DETECT, configuration[0])
            _check(CLASSIFY, configuration[1])
        with single_thread():
            return self._end_to_end(configurations, directories, log)

    def _end_to_end(
        self, configurations: Sequence[Configuration], directories: dict[tuple[str, str], Path], log: Log
    ) -> MeasuredAccuracyTable:
        scenes = self.validation()
        table = MeasuredAccuracyTable(pipeline=NAME, stages=(DETECT, CLASSIFY))
        loaded_classifiers: dict[str, LoadedVariant] = {}
        for detector_name in dict.fromkeys(c[0] for c in configurations):
            folder = _directory(directories, DETECT, detector_name)
            detector = self.load_variant(DETECT, detector_name, folder)
            detections = []
            for start in range(0, len(scenes), E2E_BATCH):
                detections += detector.predict(scenes.strips[start : start + E2E_BATCH])
            for configuration in configurations:
                if configuration[0] != detector_name:
                    continue
                classifier_name = configuration[1]
                if classifier_name not in loaded_classifiers:
                    folder = _directory(directories, CLASSIFY, classifier_name)
                    loaded_classifiers[classifier_name] = self.load_variant(CLASSIFY, classifier_name, folder)
                strings = strings_from_detections(detections, loaded_classifiers[classifier_name])
                measured = exact_match_rate(strings, scenes.strings)
                table.record(configuration, measured)
                log(f"{NAME}: {detector_name} -> {classifier_name}: {measured:.3f} of {len(scenes)} strips")
        return table


def _check(stage: str, variant: str) -> None:
    if stage not in STAGE_VARIANTS:
        raise KeyError(f"{NAME} has no stage {stage!r} (stages: {', '.join(STAGE_VARIANTS)})")
    if variant not in STAGE_VARIANTS[stage]:
        known = ", ".join(STAGE_VARIANTS[stage])
        raise KeyError(f"{NAME} stage {stage!r} has no variant {variant!r} (variants: {known})")


def _directory(directories: dict[tuple[str, str], Path], stage: str, variant: str) -> Path:
    try:
        return directories[(stage, variant)]
    except KeyError:
        raise KeyError(f"no built folder given for {stage}/{variant}") from None
