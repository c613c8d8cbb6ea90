"""Builds the two cheap variants (det_cc and cls_mlp_s, about 10 s) once for the package's tests, with the
shipped recipe, so the spec's factories find them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ipa_tasks.demo_pipelines import BuiltVariant
from ipa_tasks.demo_pipelines.digit_strips import CLASSIFY, DETECT, PIPELINE
from ipa_tasks.settings import HOME_VARIABLE, current_settings
from ipa_tasks.variant_cache import ensure_built


@dataclass(frozen=True)
class BuiltHome:
    home: Path
    detector: BuiltVariant
    classifier: BuiltVariant
    log: list[str]


@pytest.fixture(scope="session")
def digit_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuiltHome]:
    home = tmp_path_factory.mktemp("digit-strips-home")
    log: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(HOME_VARIABLE, str(home))
        cache = current_settings().variant_cache
        detector, _ = ensure_built(cache, PIPELINE, DETECT, "det_cc", log.append)
        classifier, _ = ensure_built(cache, PIPELINE, CLASSIFY, "cls_mlp_s", log.append)
        yield BuiltHome(home, detector, classifier, log)


@pytest.fixture
def in_digit_home(digit_home: BuiltHome, monkeypatch: pytest.MonkeyPatch) -> BuiltHome:
    """``IPA_HOME`` points at the built variants for this test."""
    monkeypatch.setenv(HOME_VARIABLE, str(digit_home.home))
    return digit_home
