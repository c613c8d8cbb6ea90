"""The pretrained language identifiers, run offline from their installed wheels."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ipa_tasks.demo_pipelines.language_routing.identifiers import (
    IDENTIFIER_FILE,
    Cld2Identifier,
    Identifier,
    LinguaIdentifier,
    Py3langidIdentifier,
    load_identifier,
)
from ipa_tasks.variants import VariantLoadError

from .conftest import BuiltHome

SENTENCES = {
    "de": "Bitte korrigieren Sie die unten aufgeführten Fehler und versuchen Sie es erneut.",
    "fr": "Veuillez corriger les erreurs ci-dessous avant de continuer, s'il vous plaît.",
    "ru": "Пожалуйста, исправьте ошибки ниже и попробуйте ещё раз.",
    "ja": "以下のエラーを修正してから、もう一度お試しください。",
    "he": "אנא תקנו את השגיאות שלהלן ונסו שוב מאוחר יותר.",
}


@pytest.fixture(scope="module")
def lingua_small() -> LinguaIdentifier:
    # Five languages instead of the data set's 46: loading all of them takes ~15 s and 1 GB.
    return LinguaIdentifier(sorted(SENTENCES))


@pytest.mark.parametrize("make", [Cld2Identifier, Py3langidIdentifier, "lingua"])
def test_each_identifier_names_obvious_sentences(make, lingua_small: LinguaIdentifier) -> None:
    identifier: Identifier = lingua_small if make == "lingua" else make()
    assert {code: identifier.identify(text) for code, text in SENTENCES.items()} == {c: c for c in SENTENCES}


def test_cld2_says_hebrew_with_the_current_code() -> None:
    """cld2 answers the withdrawn code ``iw`` for Hebrew; routing needs ``he``."""
    import pycld2

    assert pycld2.detect(SENTENCES["he"])[2][0][1] == "iw"
    assert Cld2Identifier().identify(SENTENCES["he"]) == "he"


def test_lingua_restricted_knows_only_its_languages(lingua_small: LinguaIdentifier) -> None:
    assert lingua_small.languages() == set(SENTENCES)
    # Spanish is not among them: the closed set answers one of its own languages (or un), never "es".
    assert lingua_small.identify("Por favor, corrija los errores señalados abajo.") in set(SENTENCES) | {"un"}
    assert {"es", "sr", "ms"} <= LinguaIdentifier.supported()


def test_open_set_identifiers_know_languages_outside_the_data_set() -> None:
    assert {"sr", "bs", "ms", "gl"} <= Cld2Identifier().languages()
    assert {"sr", "bs", "ms", "gl"} <= Py3langidIdentifier().languages()


def test_identifier_variant_predicts_normalised_codes(in_built_home: BuiltHome) -> None:
    variant = load_identifier("lid_cld2", in_built_home.identifier.directory)
    texts, languages = variant.held_out()
    predicted = variant.predict(texts[:200])
    assert len(predicted) == 200
    assert "iw" not in predicted and all(code == code.lower() and "-" not in code for code in predicted)
    assert sum(p == t for p, t in zip(predicted, languages[:200], strict=True)) > 160


def test_a_build_from_another_package_version_is_refused(in_built_home: BuiltHome, tmp_path: Path) -> None:
    copy = tmp_path / "lid_cld2"
    shutil.copytree(in_built_home.identifier.directory, copy)
    record = json.loads((copy / IDENTIFIER_FILE).read_text())
    (copy / IDENTIFIER_FILE).write_text(json.dumps({**record, "version": "0.0"}))
    with pytest.raises(
        VariantLoadError, match=r"built with pycld2 0\.0 .* ipa build-variants language-routing"
    ):
        load_identifier("lid_cld2", copy)
