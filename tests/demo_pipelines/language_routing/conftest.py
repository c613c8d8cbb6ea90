"""Builds two cheap variants (lid_cld2, txt_nb; about 6 s) once for the package's tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ipa_tasks.demo_pipelines import BuiltVariant
from ipa_tasks.demo_pipelines.language_routing import PIPELINE
from ipa_tasks.settings import HOME_VARIABLE, current_settings
from ipa_tasks.variant_cache import ensure_built


@dataclass(frozen=True)
class BuiltHome:
    home: Path
    identifier: BuiltVariant
    classifier: BuiltVariant
    fresh: tuple[bool, bool]
    log: list[str]


@pytest.fixture(scope="session")
def built_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuiltHome]:
    home = tmp_path_factory.mktemp("ipa-home")
    log: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(HOME_VARIABLE, str(home))
        cache = current_settings().variant_cache
        identifier, fresh_identifier = ensure_built(cache, PIPELINE, "identify", "lid_cld2", log.append)
        classifier, fresh_classifier = ensure_built(cache, PIPELINE, "classify", "txt_nb", log.append)
        yield BuiltHome(home, identifier, classifier, (fresh_identifier, fresh_classifier), log)


@pytest.fixture
def in_built_home(built_home: BuiltHome, monkeypatch: pytest.MonkeyPatch) -> BuiltHome:
    """``IPA_HOME`` points at the built variants for this test."""
    monkeypatch.setenv(HOME_VARIABLE, str(built_home.home))
    return built_home
