"""Building, loading through the spec, routing with the fallback, and end-to-end accuracy."""

from __future__ import annotations

import itertools
import json
import pickle
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import SGDClassifier
from sklearn.naive_bayes import ComplementNB, MultinomialNB

from ipa_tasks.demo_pipelines.language_routing import PIPELINE, lid_py3langid
from ipa_tasks.demo_pipelines.language_routing.catalogs import LABELS, load_dataset
from ipa_tasks.demo_pipelines.language_routing.classifiers import (
    CLASSIFIERS,
    FALLBACK,
    VERSION_FILE,
    LinearHead,
    NaiveBayesTable,
    RoutedClassifier,
    load_classifier,
)
from ipa_tasks.demo_pipelines.language_routing.identifiers import IdentifierVariant, load_identifier
from ipa_tasks.demo_pipelines.language_routing.routing import end_to_end_grid, route_and_classify, route_one
from ipa_tasks.settings import HOME_VARIABLE, current_settings
from ipa_tasks.spec import load_spec, shipped_specs_dir
from ipa_tasks.variant_cache import ensure_built
from ipa_tasks.variants import VariantLoadError, accuracy, load_variant

from .conftest import BuiltHome

SPEC = load_spec(shipped_specs_dir() / "language-routing.yaml")
GERMAN = "Bitte korrigieren Sie die unten aufgeführten Fehler und versuchen Sie es erneut."


def test_spec_names_the_pipelines_stages_and_variants() -> None:
    from ipa_tasks.demo_pipelines.language_routing.pipeline import STAGE_VARIANTS

    assert SPEC.name == PIPELINE.name == "language-routing"
    assert SPEC.stage_names == list(PIPELINE.stages)
    for stage in SPEC.stages:
        assert [v.name for v in stage.variants] == list(STAGE_VARIANTS[stage.name])
        assert all(v.model.kind == "python" for v in stage.variants)


def test_the_classifier_ladder_gains_accuracy_at_every_step() -> None:
    """Variants are listed cheapest first (docs/demo-pipelines.md measures their latencies); a variant that
    is slower without being more accurate would never be worth choosing."""
    from ipa_tasks.demo_pipelines.language_routing.pipeline import STAGE_VARIANTS

    assert list(CLASSIFIERS) == list(STAGE_VARIANTS["classify"])
    accuracies = [v.accuracy for v in SPEC.stage("classify").variants]
    assert all(b - a >= 0.005 for a, b in itertools.pairwise(accuracies)), accuracies


def _german(labels: set[str] | None = None) -> tuple[list[str], list[str], list[str]]:
    data = load_dataset()
    train = [s for s in data.train if s.language == "de" and (labels is None or s.label in labels)]
    test = [s.text for s in data.test if s.language == "de"]
    return [s.text for s in train], [s.label for s in train], test


@pytest.mark.parametrize(("analyzer", "ngrams"), [("word", (1, 1)), ("char_wb", (1, 4))])
def test_tables_compute_what_scikit_learn_predicts(analyzer: str, ngrams: tuple[int, int]) -> None:
    texts, labels, test = _german()
    test = [*test, "", "zzzz qqqq"]  # no token, or no known word: the prior decides
    counts = CountVectorizer(analyzer=analyzer, ngram_range=ngrams)
    model = MultinomialNB(alpha=0.1).fit(counts.fit_transform(texts), labels)
    table = pickle.loads(pickle.dumps(NaiveBayesTable.of(counts, model)))
    features = counts.transform(test)
    columns = [LABELS.index(c) for c in model.classes_]
    assert table.scores(test)[:, columns] == pytest.approx(model.predict_joint_log_proba(features))
    assert table.probabilities(test)[:, columns] == pytest.approx(model.predict_proba(features))
    assert table.predict(test) == list(model.predict(features))
    assert table.predict(test) == [table.predict([text])[0] for text in test]


@pytest.mark.parametrize("labels", [None, {"admin", "core"}], ids=["one-vs-rest", "binary"])
def test_heads_compute_what_scikit_learn_predicts(labels: set[str] | None) -> None:
    """A head is the fitted estimator's weights; its probabilities and labels are the estimator's own, up
    to the float32 rounding of the weights."""
    texts, train_labels, test = _german(labels)
    vectoriser = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, dtype=np.float32)
    features = vectoriser.fit_transform(texts)
    test_features = vectoriser.transform(test)
    logistic = SGDClassifier(loss="log_loss", max_iter=20, tol=None, random_state=0)
    for estimator in (logistic, ComplementNB(alpha=0.3)):
        estimator.fit(features, train_labels)
        head = LinearHead.of(estimator, features.dtype)
        ours = head.probabilities(test_features)
        columns = [LABELS.index(c) for c in estimator.classes_]
        assert ours[:, columns] == pytest.approx(estimator.predict_proba(test_features), abs=1e-4)
        assert ours.sum(axis=1) == pytest.approx(1.0)
        predicted = [LABELS[i] for i in head.label_indices(test_features)]
        assert predicted == list(estimator.predict(test_features))


def test_built_once_then_cached(built_home: BuiltHome, monkeypatch: pytest.MonkeyPatch) -> None:
    assert built_home.fresh == (True, True)
    monkeypatch.setenv(HOME_VARIABLE, str(built_home.home))
    again, fresh = ensure_built(current_settings().variant_cache, PIPELINE, "classify", "txt_nb", print)
    assert not fresh and again.accuracy == built_home.classifier.accuracy
    files = {p.name for p in built_home.classifier.directory.iterdir()}
    assert files == {"build.json", "models.pickle", "classifier.json", "held_out.json"}
    assert built_home.classifier.size_mb < 30
    assert built_home.classifier.params["language_models"] == 46


@pytest.mark.parametrize(("stage", "variant"), [("identify", "lid_cld2"), ("classify", "txt_nb")])
def test_loaded_through_the_spec_factory_with_the_built_accuracy(
    in_built_home: BuiltHome, stage: str, variant: str
) -> None:
    spec_variant = SPEC.stage(stage).variant(variant)
    loaded = load_variant(spec_variant.model)
    measured = accuracy(loaded, *loaded.held_out())
    built = in_built_home.identifier if stage == "identify" else in_built_home.classifier
    assert measured == pytest.approx(built.accuracy)
    # The spec's numbers are these measurements; a recipe change that moves them must update the spec.
    assert spec_variant.accuracy == pytest.approx(measured, abs=5e-5)


def test_an_unbuilt_variant_names_the_build_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HOME_VARIABLE, str(tmp_path))
    with pytest.raises(
        VariantLoadError, match="ipa build-variants language-routing --variants lid_py3langid"
    ):
        lid_py3langid()


def test_a_classifier_pickled_by_another_scikit_learn_is_refused(
    built_home: BuiltHome, tmp_path: Path
) -> None:
    copy = tmp_path / "txt_nb"
    shutil.copytree(built_home.classifier.directory, copy)
    (copy / VERSION_FILE).write_text(json.dumps({"scikit-learn": "0.24.2"}))
    with pytest.raises(VariantLoadError, match=r"scikit-learn 0\.24\.2 .* --variants txt_nb"):
        load_classifier("txt_nb", copy)


def test_unknown_stage_or_variant_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="no stage 'detect'"):
        PIPELINE.build_variant("detect", "lid_cld2", tmp_path, print)
    with pytest.raises(KeyError, match="no variant 'lid_fasttext'"):
        PIPELINE.build_variant("identify", "lid_fasttext", tmp_path, print)


@pytest.fixture
def classifier(built_home: BuiltHome) -> RoutedClassifier:
    return load_classifier("txt_nb", built_home.classifier.directory)


@pytest.fixture
def identifier(built_home: BuiltHome) -> IdentifierVariant:
    return load_identifier("lid_cld2", built_home.identifier.directory)


class _Saying:
    """An identifier that names one language for everything."""

    def __init__(self, language: str) -> None:
        self.language = language

    def predict(self, items: Sequence[str]) -> list[str]:
        return [self.language] * len(items)


def test_a_language_without_a_model_goes_to_the_fallback_and_is_counted(classifier: RoutedClassifier) -> None:
    assert "sr" not in classifier.languages and "un" not in classifier.languages
    labels = classifier.predict([("sr", GERMAN), ("un", GERMAN), ("de", GERMAN)])
    assert classifier.fallback_items == 2
    fallback_label = str(classifier.models[FALLBACK].predict([GERMAN])[0])
    assert labels[:2] == [fallback_label, fallback_label]
    assert labels[2] == str(classifier.models["de"].predict([GERMAN])[0])

    routed = route_one(_Saying("sr"), classifier, GERMAN)
    assert (routed.language, routed.model, routed.used_fallback) == ("sr", FALLBACK, True)
    assert classifier.fallback_items == 3


def test_a_wrong_language_with_a_model_goes_to_that_model_without_fallback(
    classifier: RoutedClassifier,
) -> None:
    routed = route_one(_Saying("nl"), classifier, GERMAN)
    assert (routed.model, routed.used_fallback) == ("nl", False)
    assert routed.label == str(classifier.models["nl"].predict([GERMAN])[0])
    assert classifier.fallback_items == 0


def test_a_batch_is_one_call_per_routed_model_and_equals_item_by_item(classifier: RoutedClassifier) -> None:
    items, _ = classifier.held_out()
    batch = list(items[:40])
    one_by_one = [classifier.predict([item])[0] for item in batch]
    calls = _count_calls(classifier)
    assert classifier.predict(batch) == one_by_one
    assert len(calls) == len({classifier.model_key(language) for language, _ in batch}) < len(batch)
    assert sum(calls) == len(batch)


def test_the_multilingual_mix_adds_one_call_and_the_multilingual_probabilities(
    classifier: RoutedClassifier,
) -> None:
    """txt_mix's rule, on txt_nb's models: a text routed to a language model is labelled by the sum of
    that model's and the multilingual model's probabilities; one routed to none by the multilingual alone."""
    mixed = RoutedClassifier(
        "mixed", dict(classifier.models), classifier.held_out_samples, with_multilingual=True
    )
    items, _ = mixed.held_out()
    batch = [*items[:30], ("sr", GERMAN)]
    texts = [text for _, text in batch]
    multilingual = classifier.models[FALLBACK].probabilities(texts)
    expected = [
        LABELS[
            (
                multilingual[i] + (classifier.models[lang].probabilities([text])[0] if lang != "sr" else 0)
            ).argmax()
        ]
        for i, (lang, text) in enumerate(batch)
    ]
    calls = _count_calls(mixed)
    assert mixed.predict(batch) == expected
    assert len(calls) == len({mixed.model_key(language) for language, _ in batch})  # the fallback included
    assert sum(calls) == len(batch) + 30
    assert mixed.fallback_items == 1


def _count_calls(classifier: RoutedClassifier) -> list[int]:
    calls: list[int] = []
    for key, model in list(classifier.models.items()):
        classifier.models[key] = _Counting(model, calls)
    return calls


class _Counting:
    def __init__(self, model, calls: list[int]) -> None:
        self.model, self.calls = model, calls

    def label_indices(self, texts):
        self.calls.append(len(texts))
        return self.model.label_indices(texts)

    def probabilities(self, texts):
        self.calls.append(len(texts))
        return self.model.probabilities(texts)


def test_end_to_end_is_measured_not_the_product(built_home: BuiltHome) -> None:
    directories = {
        ("identify", "lid_cld2"): built_home.identifier.directory,
        ("classify", "txt_nb"): built_home.classifier.directory,
    }
    lines: list[str] = []
    table = PIPELINE.end_to_end_accuracy([("lid_cld2", "txt_nb")], directories, lines.append)
    assert table.stages == ("identify", "classify")
    measured = table.lookup(("lid_cld2", "txt_nb"))
    product = built_home.identifier.accuracy * built_home.classifier.accuracy
    assert measured is not None
    # Misrouted strings often still get the right label (a related language's model, or the fallback),
    # so the pipeline does much better than "any identifier error is a pipeline error".
    assert measured > product + 0.03
    assert any("to the fallback" in line for line in lines)


def test_grid_agrees_with_routing_each_text(
    built_home: BuiltHome, identifier: IdentifierVariant, classifier: RoutedClassifier
) -> None:
    test = identifier.held_out_samples
    results = end_to_end_grid(
        {"lid_cld2": identifier}, {"txt_nb": classifier}, [("lid_cld2", "txt_nb")], test
    )
    result = results[("lid_cld2", "txt_nb")]
    routed = route_and_classify(identifier, classifier, [s.text for s in test])
    right = sum(r.label == s.label for r, s in zip(routed, test, strict=True))
    assert result.accuracy == pytest.approx(right / len(test))
    assert result.fallback_items == sum(r.used_fallback for r in routed)
    assert result.fallback_items == built_home.identifier.params["outside_data_set"] > 0
    assert result.language_accuracy == pytest.approx(built_home.identifier.accuracy)
