"""Demo pipeline A, ``digit-strips``: a detector finds the handwritten digits in a strip, a classifier reads
each crop the detector cut; the strip is read right only if every digit is (``docs/demo-pipelines.md``).

Stages and variants (``ipa_tasks/pipelines/digit-strips.yaml``):

- ``detect``: ``det_cc`` (connected components, no learning), ``det_fcn_s/m/l`` (CenterNet-style nets).
- ``classify``: ``cls_mlp_s``, ``cls_mlp_l``, ``cls_cnn_m``, ``cls_cnn_l``.

Each variant's factory below loads the built variant from the variant cache; build them first with
``ipa build-variants digit-strips``.
"""

from __future__ import annotations

from ipa_tasks.demo_pipelines.digit_strips.boxes import Box
from ipa_tasks.demo_pipelines.digit_strips.detectors import Detections
from ipa_tasks.demo_pipelines.digit_strips.pipeline import (
    CLASSIFIERS,
    CLASSIFY,
    DETECT,
    DETECTORS,
    NAME,
    DigitStripsPipeline,
)
from ipa_tasks.demo_pipelines.digit_strips.reading import read_strip, read_strips
from ipa_tasks.variant_cache import load_cached
from ipa_tasks.variants import LoadedVariant

__all__ = [
    "CLASSIFIERS",
    "CLASSIFY",
    "DETECT",
    "DETECTORS",
    "PIPELINE",
    "Box",
    "Detections",
    "DigitStripsPipeline",
    "read_strip",
    "read_strips",
]

PIPELINE = DigitStripsPipeline()


def det_cc() -> LoadedVariant:
    return load_cached(NAME, DETECT, "det_cc")


def det_fcn_s() -> LoadedVariant:
    return load_cached(NAME, DETECT, "det_fcn_s")


def det_fcn_m() -> LoadedVariant:
    return load_cached(NAME, DETECT, "det_fcn_m")


def det_fcn_l() -> LoadedVariant:
    return load_cached(NAME, DETECT, "det_fcn_l")


def cls_mlp_s() -> LoadedVariant:
    return load_cached(NAME, CLASSIFY, "cls_mlp_s")


def cls_mlp_l() -> LoadedVariant:
    return load_cached(NAME, CLASSIFY, "cls_mlp_l")


def cls_cnn_m() -> LoadedVariant:
    return load_cached(NAME, CLASSIFY, "cls_cnn_m")


def cls_cnn_l() -> LoadedVariant:
    return load_cached(NAME, CLASSIFY, "cls_cnn_l")
