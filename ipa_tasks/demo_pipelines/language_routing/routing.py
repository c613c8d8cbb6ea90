"""Routing: each text goes to the classifier of the language the identifier *predicted*, and end-to-end
accuracy of (identifier, classifier) pairs measured that way.

A wrong language sends the text to another language's model (often a related one, es -> ca, hr -> sl,
which may still label it right); a language without a model (``un``, ``sr``, ``ms`` ...) sends it to the
classifier's multilingual fallback. :func:`route_and_classify` is what the serving runtime calls.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ipa_tasks.demo_pipelines.language_routing.catalogs import Sample

if TYPE_CHECKING:  # the classifiers pull in scikit-learn, which an identifier-only process never needs
    from ipa_tasks.demo_pipelines.language_routing.classifiers import RoutedClassifier


class LanguagePredictor(Protocol):
    """Stage ``identify`` as loaded (:class:`~.identifiers.IdentifierVariant`): texts in, codes out."""

    def predict(self, items: Sequence[str]) -> list[str]: ...


@dataclass(frozen=True)
class Routed:
    language: str
    """What the identifier said."""
    model: str
    """The classifier model that labelled the text: ``language``, or ``*`` for the fallback (with
    ``txt_mix``, a language model labels together with the multilingual one)."""
    label: str

    @property
    def used_fallback(self) -> bool:
        return self.model != self.language


def route_and_classify(
    identifier: LanguagePredictor, classifier: RoutedClassifier, texts: Sequence[str]
) -> list[Routed]:
    """Identify the language of every text, then label each with the model of its predicted language: one
    identifier call for the batch and one classifier call per distinct predicted language (``txt_mix`` adds
    one multilingual call for the whole batch)."""
    languages = identifier.predict(texts)
    labels = classifier.predict(list(zip(languages, texts, strict=True)))
    return [
        Routed(language, classifier.model_key(language), label)
        for language, label in zip(languages, labels, strict=True)
    ]


def route_one(identifier: LanguagePredictor, classifier: RoutedClassifier, text: str) -> Routed:
    return route_and_classify(identifier, classifier, [text])[0]


@dataclass(frozen=True)
class EndToEnd:
    identifier: str
    classifier: str
    accuracy: float
    """Fraction of test texts whose final label is right after routing by the predicted language."""
    language_accuracy: float
    fallback_items: int
    """Test texts routed to a language without a model, hence to the multilingual fallback."""
    misrouted_but_right: int
    """Test texts routed by a wrong language (to its model or to the fallback) that still got the right
    label."""


def end_to_end_grid(
    identifiers: Mapping[str, LanguagePredictor],
    classifiers: Mapping[str, RoutedClassifier],
    pairs: Sequence[tuple[str, str]],
    test: Sequence[Sample],
    log: Callable[[str], None] = lambda _line: None,
) -> dict[tuple[str, str], EndToEnd]:
    """End-to-end results for every (identifier, classifier) in ``pairs`` on ``test``.

    Each identifier labels the test texts once, and each classifier labels each distinct (routed model,
    text) once, whichever identifiers routed it there: most texts are routed the same way by every
    identifier, so a grid costs little more than one pass per variant.
    """
    texts = [s.text for s in test]
    predicted = {name: identifiers[name].predict(texts) for name in sorted({i for i, _ in pairs})}
    language_accuracy = {
        name: sum(p == s.language for p, s in zip(languages, test, strict=True)) / len(test)
        for name, languages in predicted.items()
    }
    for name, value in language_accuracy.items():
        log(f"{name}: language accuracy {value:.4f}")
    results: dict[tuple[str, str], EndToEnd] = {}
    for classifier_name in sorted({c for _, c in pairs}):
        classifier = classifiers[classifier_name]
        routed = sorted(
            {
                (classifier.model_key(language), text)
                for languages in predicted.values()
                for language, text in zip(languages, texts, strict=True)
            }
        )
        labelled = dict(zip(routed, classifier.predict(routed), strict=True))
        for identifier_name, languages in predicted.items():
            if (identifier_name, classifier_name) not in pairs:
                continue
            right = fallback = lucky = 0
            for language, sample in zip(languages, test, strict=True):
                key = classifier.model_key(language)
                correct = labelled[(key, sample.text)] == sample.label
                right += correct
                fallback += key != language
                lucky += correct and language != sample.language
            results[(identifier_name, classifier_name)] = EndToEnd(
                identifier=identifier_name,
                classifier=classifier_name,
                accuracy=right / len(test),
                language_accuracy=language_accuracy[identifier_name],
                fallback_items=fallback,
                misrouted_but_right=lucky,
            )
            log(
                f"{identifier_name} -> {classifier_name}: end-to-end {right / len(test):.4f} "
                f"({fallback} to the fallback, {lucky} misrouted but right)"
            )
    return results
