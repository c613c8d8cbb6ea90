"""The data set read from Django's translation catalogues, and language code normalisation."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from ipa_tasks.demo_pipelines.language_routing.catalogs import (
    LABELS,
    MIN_CHARACTERS,
    Sample,
    clean_text,
    load_dataset,
    load_samples,
    split,
)
from ipa_tasks.demo_pipelines.language_routing.languages import LANGUAGES, normalise_language_code


@pytest.fixture(scope="module")
def samples() -> list[Sample]:
    """Parsed again, independently of the process-wide cache of :func:`load_dataset`."""
    return load_samples()


def test_the_data_set_is_deterministic(samples: list[Sample]) -> None:
    assert split(samples) == load_dataset()


def test_every_language_and_label_is_present() -> None:
    data = load_dataset()
    assert data.languages() == sorted(LANGUAGES)
    assert {s.language for s in data.test} == set(LANGUAGES)
    assert set(LABELS) == {"admin", "auth", "core", "gis", "humanize", "site"}
    assert {s.label for s in data.train} == set(LABELS)
    labels_per_language: dict[str, set[str]] = defaultdict(set)
    for sample in data.train:
        labels_per_language[sample.language].add(sample.label)
    # Every per-language classifier needs at least two labels to learn anything.
    assert min(len(labels) for labels in labels_per_language.values()) >= 2


def test_sizes_and_the_test_fraction() -> None:
    data = load_dataset()
    total = len(data.train) + len(data.test)
    assert 10_000 < total < 13_000
    assert 0.25 < len(data.test) / total < 0.35
    assert all(len(s.text) >= MIN_CHARACTERS for s in data.train + data.test)


def test_train_and_test_are_disjoint_by_text_and_by_source() -> None:
    data = load_dataset()
    assert not {(s.language, s.text) for s in data.train} & {(s.language, s.text) for s in data.test}
    # Split by English source: no test sentence has a translation of itself in training.
    assert not {s.source for s in data.train} & {s.source for s in data.test}


def test_one_label_per_text(samples: list[Sample]) -> None:
    assert len({(s.language, s.text) for s in samples}) == len(samples)


def test_held_out_order_mixes_languages() -> None:
    """The profiling job times consecutive held-out items, so a batch must mix languages like real traffic."""
    test = load_dataset().test
    assert len({s.language for s in test[:32]}) >= 12
    assert list(test) != sorted(test)


def test_english_text_is_the_source_and_translations_are_not() -> None:
    data = load_dataset()
    english = [s for s in data.train if s.language == "en"]
    german = [s for s in data.train if s.language == "de"]
    assert english and all(s.text == clean_text(s.source) for s in english)
    assert sum(s.text == clean_text(s.source) for s in german) < len(german) / 20


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        (
            "Ensure this value has at most %(limit_value)d characters.",
            "Ensure this value has at most characters.",
        ),
        ("%s is not a valid date, %d times", "is not a valid date, times"),
        ("Delete the {name} object <strong>now</strong>", "Delete the object now"),
        ("  many   spaces\n", "many spaces"),
    ],
)
def test_placeholders_and_markup_are_removed(raw: str, cleaned: str) -> None:
    assert clean_text(raw) == cleaned


@pytest.mark.parametrize(
    ("code", "normalised"),
    [
        ("de", "de"),
        ("EN", "en"),
        ("zh-Hant", "zh"),
        ("zh_Hans", "zh"),
        ("pt_BR", "pt"),
        ("pt-br", "pt"),
        ("iw", "he"),
        ("in", "id"),
        ("und", "un"),
        ("un", "un"),
        ("", "un"),
        (None, "un"),
    ],
)
def test_language_codes_are_normalised(code: str | None, normalised: str) -> None:
    assert normalise_language_code(code) == normalised


def test_the_label_distribution_is_skewed_but_complete() -> None:
    counts = Counter(s.label for s in load_dataset().train)
    assert counts.most_common(1)[0][0] == "core"
    assert counts["humanize"] > 0
