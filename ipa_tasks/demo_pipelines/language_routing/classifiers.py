"""The per-language text classifiers of stage ``classify``: one small linear model per language.

Every variant has one model per data set language, trained on that language's training strings, plus one
multilingual model of the same recipe trained on all of them: the **fallback** for a text routed to a
language that has no model (an identifier's ``un``, or a language outside the data set such as ``sr`` or
``ms``). Sending such a text to the fallback rather than dropping it keeps the pipeline answering every
request; every use of it is counted (:attr:`RoutedClassifier.fallback_items`), since a high count means the
identifier is off-set.

The four variants form a ladder, each more accurate and slower than the one before (measured in
``docs/demo-pipelines.md``):

- ``txt_words``: multinomial naive Bayes over words, ~8 a string;
- ``txt_nb``: the same over character 1-4-grams within word boundaries, ~200 a string, which also see
  inside words and into scripts without spaces (ja, zh, th);
- ``txt_lr``: logistic regression over TF-IDF character 2-5-grams of the language's own vocabulary;
- ``txt_mix``: the same features with a complement naive Bayes head beside the logistic regression, and
  every text's probabilities added to those of the multilingual model, which has also seen the other
  languages' translations of the same strings: one more model call per batch.

The naive Bayes variants are tables (:class:`NaiveBayesTable`): over raw counts a label's score is a sum of
per-token log-probabilities, so a text needs its tokens looked up, not a sparse matrix. The TF-IDF variants
are :class:`LinearModel` objects: scikit-learn's vectoriser, then each fitted classifier as its weights
(:class:`LinearHead`). Both compute what scikit-learn's ``predict``/``predict_proba`` would, without its
per-call input validation (~0.4 ms a call, more than the arithmetic on these batches; a batch of 32
mixed-language strings makes ~23 calls).
"""

from __future__ import annotations

import functools
import json
import pickle
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import sklearn
from scipy.special import expit
from sklearn.base import ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import SGDClassifier
from sklearn.naive_bayes import ComplementNB, MultinomialNB

from ipa_tasks.demo_pipelines.language_routing.catalogs import (
    LABELS,
    Sample,
    read_held_out,
    write_held_out,
)
from ipa_tasks.variants import VariantLoadError

SEED = 0
MODELS_FILE = "models.pickle"
VERSION_FILE = "classifier.json"
FALLBACK = "*"
"""Key of the multilingual model in a variant's model table."""


def _tfidf(ngrams: tuple[int, int] = (2, 5), max_features: int = 50_000) -> TfidfVectorizer:
    # Character 2-5-grams within word boundaries: ~7k per language (~180 strings), so the cap only bounds
    # the multilingual model. Whole words are too sparse in 180 strings; 1-4-grams were 0.6 points worse.
    return TfidfVectorizer(
        analyzer="char_wb", ngram_range=ngrams, max_features=max_features, sublinear_tf=True, dtype=np.float32
    )


def _tfidf_multilingual() -> TfidfVectorizer:
    # The multilingual model has 8k strings, enough for 2-6-grams and 200k of them: alone it labels 0.820
    # of the test strings (0.802 with the per-language features), and mixed in, 0.45 points more.
    return _tfidf((2, 6), 200_000)


def _logistic_regression() -> SGDClassifier:
    # SGD on the log loss: lbfgs with C=10 took 229 s for 46 models; this is 20 epochs, one-vs-rest.
    return SGDClassifier(loss="log_loss", alpha=1e-4, max_iter=20, tol=None, random_state=SEED)


class LanguageModel(Protocol):
    """One language's (or the multilingual) model."""

    def label_indices(self, texts: Sequence[str]) -> np.ndarray:
        """Index in :data:`~.catalogs.LABELS` of each text's label."""
        ...

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """(texts, LABELS) class probabilities; a language's model may lack some labels (probability 0)."""
        ...

    def predict(self, texts: Sequence[str]) -> list[str]: ...


Trainer = Callable[[list[str], list[str], bool], LanguageModel]
"""(texts, labels, multilingual) -> the fitted model; ``multilingual`` for the fallback."""


@dataclass(frozen=True)
class ClassifierRecipe:
    family: str
    train: Trainer
    with_multilingual: bool = False
    """Add the multilingual model's probabilities to every text's, not only label the texts routed to no
    language model with it."""


def _train_table(
    texts: list[str], labels: list[str], multilingual: bool, *, analyzer: str, ngrams: tuple[int, int]
) -> NaiveBayesTable:
    counts = CountVectorizer(analyzer=analyzer, ngram_range=ngrams)
    return NaiveBayesTable.of(counts, MultinomialNB(alpha=0.1).fit(counts.fit_transform(texts), labels))


def _train_linear(
    texts: list[str],
    labels: list[str],
    multilingual: bool,
    *,
    heads: Callable[[], list[ClassifierMixin]],
    multilingual_features: Callable[[], TfidfVectorizer] | None = None,
) -> LinearModel:
    vectoriser = (multilingual_features if multilingual and multilingual_features else _tfidf)()
    features = vectoriser.fit_transform(texts)
    fitted = []
    for estimator in heads():
        with warnings.catch_warnings():
            # A capped epoch count is the point (build time); the held-out accuracy is what is judged.
            warnings.simplefilter("ignore", ConvergenceWarning)
            estimator.fit(features, labels)
        fitted.append(LinearHead.of(estimator, features.dtype))
    return LinearModel(vectoriser, tuple(fitted))


CLASSIFIERS: dict[str, ClassifierRecipe] = {
    "txt_words": ClassifierRecipe(
        "multinomial naive Bayes table, words",
        functools.partial(_train_table, analyzer="word", ngrams=(1, 1)),
    ),
    "txt_nb": ClassifierRecipe(
        "multinomial naive Bayes table, char 1-4-grams",
        functools.partial(_train_table, analyzer="char_wb", ngrams=(1, 4)),
    ),
    "txt_lr": ClassifierRecipe(
        "logistic regression (SGD), TF-IDF char 2-5-grams",
        functools.partial(_train_linear, heads=lambda: [_logistic_regression()]),
    ),
    "txt_mix": ClassifierRecipe(
        "logistic regression + complement naive Bayes, TF-IDF char 2-5-grams, plus the multilingual "
        "model's probabilities (char 2-6-grams, 200k)",
        functools.partial(
            _train_linear,
            heads=lambda: [_logistic_regression(), ComplementNB(alpha=0.3)],
            multilingual_features=_tfidf_multilingual,
        ),
        with_multilingual=True,
    ),
}


class NaiveBayesTable:
    """Multinomial naive Bayes over token counts, kept as what it is, a table: a text's joint log-likelihood
    for a label is the label's log prior plus its tokens' log-probabilities (every occurrence counted,
    tokens outside the vocabulary ignored). That is ``MultinomialNB.predict`` on ``CountVectorizer``
    counts, without building and validating a sparse matrix: a string of words takes ~0.05 ms, against
    ~0.2 ms through scikit-learn's hashing vectoriser and a product, ~0.6 ms through a scikit-learn
    ``Pipeline.predict``."""

    def __init__(self, counts: CountVectorizer, log_probabilities: np.ndarray, log_prior: np.ndarray) -> None:
        self.counts = counts
        """The fitted vectoriser: its tokenisation and vocabulary."""
        self.log_probabilities = log_probabilities
        """(vocabulary, LABELS); 0 for the labels this language lacks."""
        self.log_prior = log_prior
        """(LABELS,); -inf for the labels this language lacks."""
        self._prepare()

    @classmethod
    def of(cls, counts: CountVectorizer, model: MultinomialNB) -> NaiveBayesTable:
        columns = [LABELS.index(str(c)) for c in model.classes_]
        table = np.zeros((len(counts.vocabulary_), len(LABELS)))
        table[:, columns] = model.feature_log_prob_.T
        prior = np.full(len(LABELS), -np.inf)
        prior[columns] = model.class_log_prior_
        return cls(counts, table, prior)

    def _prepare(self) -> None:
        self._tokens = self.counts.build_analyzer()
        self._row = self.counts.vocabulary_.get

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_tokens", "_row")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._prepare()

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """(texts, LABELS) joint log-likelihoods."""
        rows: list[int] = []
        starts = np.empty(len(texts), dtype=np.intp)
        for index, text in enumerate(texts):
            starts[index] = len(rows)
            rows.extend(row for row in map(self._row, self._tokens(text)) if row is not None)
        scores = np.tile(self.log_prior, (len(texts), 1))
        if rows:
            # One sum per text over its stretch of the looked-up rows; texts without a known token keep
            # the prior (reduceat would hand them the next row).
            known = starts < np.append(starts[1:], len(rows))
            scores[known] += np.add.reduceat(self.log_probabilities[rows], starts[known], axis=0)
        return scores

    def label_indices(self, texts: Sequence[str]) -> np.ndarray:
        return self.scores(texts).argmax(axis=1)

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        scores = self.scores(texts)
        scores = np.exp(scores - scores.max(axis=1, keepdims=True))
        return scores / scores.sum(axis=1, keepdims=True)

    def predict(self, texts: Sequence[str]) -> list[str]:
        return [LABELS[i] for i in self.label_indices(texts)]


@dataclass(frozen=True)
class LinearHead:
    """A fitted linear classifier as its weights. ``probabilities`` is the estimator's ``predict_proba``
    (softmax of the joint log-likelihoods for complement naive Bayes, normalised one-vs-rest sigmoids for
    logistic regression), spread over :data:`~.catalogs.LABELS`: a language's model may lack some labels."""

    labels: np.ndarray
    """Index in LABELS of each of the estimator's classes."""
    weights: np.ndarray
    """(features, classes) in the vectoriser's dtype, so the product needs no conversion."""
    bias: np.ndarray
    softmax: bool
    """Complement naive Bayes; otherwise one-vs-rest logistic."""

    @classmethod
    def of(cls, estimator: ClassifierMixin, dtype: np.dtype) -> LinearHead:
        labels = np.array([LABELS.index(str(c)) for c in estimator.classes_])
        if isinstance(estimator, ComplementNB):
            bias = estimator.class_log_prior_
            if len(labels) > 1:
                bias = np.zeros_like(bias)  # complement NB uses its prior only for a single class
            matrix, softmax = estimator.feature_log_prob_, True
        elif isinstance(estimator, SGDClassifier) and estimator.loss == "log_loss":
            matrix, bias, softmax = estimator.coef_, estimator.intercept_, False
        else:
            raise TypeError(f"no linear head for {type(estimator).__name__}")
        weights = np.ascontiguousarray(matrix.T, dtype=dtype)
        return cls(labels, weights, np.asarray(bias, dtype=dtype), softmax)

    def scores(self, features: Any) -> np.ndarray:
        """Joint log-likelihoods (complement NB) or decision values (logistic regression)."""
        return np.asarray(features @ self.weights, dtype=np.float64) + self.bias

    def label_indices(self, features: Any) -> np.ndarray:
        """Index in LABELS of the most probable class: the estimator's ``predict``."""
        scores = self.scores(features)
        if scores.shape[1] == 1:  # binary: one weight vector, for the second class
            return self.labels[(scores[:, 0] > 0).astype(np.intp)]
        return self.labels[scores.argmax(axis=1)]

    def probabilities(self, features: Any) -> np.ndarray:
        scores = self.scores(features)
        if self.softmax:
            scores = np.exp(scores - scores.max(axis=1, keepdims=True))
        elif scores.shape[1] == 1:
            positive = expit(scores[:, 0])
            scores = np.stack([1 - positive, positive], axis=1)
        else:
            scores = expit(scores)
        total = scores.sum(axis=1, keepdims=True)
        spread = np.zeros((scores.shape[0], len(LABELS)))
        # All-zero one-vs-rest rows (every sigmoid underflowed) get uniform probabilities, as in sklearn.
        spread[:, self.labels] = np.divide(
            scores, total, out=np.full_like(scores, 1 / len(self.labels)), where=total > 0
        )
        return spread


@dataclass(frozen=True)
class LinearModel:
    """A fitted TF-IDF vectoriser and the linear classifiers (heads) trained on its features; their
    probabilities are summed."""

    features: TfidfVectorizer
    heads: tuple[LinearHead, ...]

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        features = self.features.transform(texts)
        total = self.heads[0].probabilities(features)
        for head in self.heads[1:]:
            total += head.probabilities(features)
        return total

    def label_indices(self, texts: Sequence[str]) -> np.ndarray:
        """Index in LABELS of each text's label. One head needs no probabilities: its largest score is
        its most probable class."""
        if len(self.heads) == 1:
            return self.heads[0].label_indices(self.features.transform(texts))
        return self.probabilities(texts).argmax(axis=1)

    def predict(self, texts: Sequence[str]) -> list[str]:
        return [LABELS[i] for i in self.label_indices(texts)]


def train_one(variant: str, samples: Sequence[Sample], *, multilingual: bool = False) -> LanguageModel:
    labels = [s.label for s in samples]
    if len(set(labels)) < 2:
        raise ValueError(f"{variant}: {len(samples)} training strings with only the labels {set(labels)}")
    return CLASSIFIERS[variant].train([s.text for s in samples], labels, multilingual)


def train_models(variant: str, train: Sequence[Sample]) -> dict[str, LanguageModel]:
    """One model per language of ``train`` and the multilingual fallback (key :data:`FALLBACK`)."""
    by_language: dict[str, list[Sample]] = defaultdict(list)
    for sample in train:
        by_language[sample.language].append(sample)
    models = {language: train_one(variant, by_language[language]) for language in sorted(by_language)}
    models[FALLBACK] = train_one(variant, train, multilingual=True)
    return models


class RoutedClassifier:
    """A classifier variant as a :class:`~ipa_tasks.variants.LoadedVariant`: items are (language, text)
    pairs, the language being the one routing chose; the output is the component label."""

    def __init__(
        self,
        name: str,
        models: dict[str, LanguageModel],
        held_out: Sequence[Sample],
        *,
        with_multilingual: bool = False,
    ) -> None:
        if FALLBACK not in models:
            raise ValueError(f"{name}: no multilingual fallback model")
        self.name = name
        self.models = models
        self.with_multilingual = with_multilingual
        self.held_out_samples = tuple(held_out)
        self.fallback_items = 0
        """Items so far that had no model for their language and went to the fallback."""

    @property
    def languages(self) -> set[str]:
        return set(self.models) - {FALLBACK}

    def model_key(self, language: str) -> str:
        return language if language in self.models and language != FALLBACK else FALLBACK

    def predict(self, items: Sequence[Sequence[Any]]) -> list[str]:
        # One model call per routed model, not per item: that is where batching pays. With the
        # multilingual mix, one more call labels the whole batch.
        if not items:
            return []
        texts = [str(text) for _language, text in items]
        groups: dict[str, list[int]] = defaultdict(list)
        for index, (language, _text) in enumerate(items):
            groups[self.model_key(language)].append(index)
        self.fallback_items += len(groups.get(FALLBACK, ()))
        if self.with_multilingual:
            probabilities = self.models[FALLBACK].probabilities(texts)
            for key, indices in groups.items():
                if key != FALLBACK:  # a text routed to no language model keeps the multilingual answer
                    probabilities[indices] += self.models[key].probabilities([texts[i] for i in indices])
            chosen = probabilities.argmax(axis=1)
        else:
            chosen = np.empty(len(items), dtype=np.intp)
            for key, indices in groups.items():
                chosen[indices] = self.models[key].label_indices([texts[i] for i in indices])
        return [LABELS[i] for i in chosen]

    def held_out(self) -> tuple[list[tuple[str, str]], list[str]]:
        return [(s.language, s.text) for s in self.held_out_samples], [s.label for s in self.held_out_samples]


def save_classifier(directory: Path, models: dict[str, LanguageModel], test: Sequence[Sample]) -> list[Path]:
    """The model table as one pickle (scikit-learn's own persistence advice for trusted files), the
    scikit-learn version that wrote it, and the held-out split. Plain pickle, not joblib: joblib's
    Python-level pickler took 10 s on the 47 n-gram vocabularies, the C pickler under a second."""
    path = directory / MODELS_FILE
    path.write_bytes(pickle.dumps(models, protocol=pickle.HIGHEST_PROTOCOL))
    (directory / VERSION_FILE).write_text(json.dumps({"scikit-learn": sklearn.__version__}))
    return [path, directory / VERSION_FILE, write_held_out(directory, test)]


def load_classifier(variant: str, directory: Path) -> RoutedClassifier:
    written_by = json.loads((directory / VERSION_FILE).read_text())["scikit-learn"]
    if written_by != sklearn.__version__:
        # scikit-learn does not promise that its pickles load, or predict the same, across versions.
        raise VariantLoadError(
            f"language-routing/{variant} was built with scikit-learn {written_by} but "
            f"{sklearn.__version__} is installed; rebuild it: "
            f"ipa build-variants language-routing --variants {variant}"
        )
    # Only files this package wrote into the variant cache are unpickled.
    models = pickle.loads((directory / MODELS_FILE).read_bytes())
    return RoutedClassifier(
        variant, models, read_held_out(directory), with_multilingual=CLASSIFIERS[variant].with_multilingual
    )
