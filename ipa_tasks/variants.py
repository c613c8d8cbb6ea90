"""Loading a model variant so that it can be run, timed and scored.

A spec names each variant's model by a :class:`~ipa_tasks.spec.ModelSource`. Only ``kind: python`` can be
run here: its ``uri`` is ``package.module:factory``, and ``factory()`` returns an object that satisfies
:class:`LoadedVariant`, a model that predicts a whole batch in one call and carries its own held-out data.
``reference`` variants are published models we do not run, and ``mlflow`` variants are not loadable yet.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from ipa_tasks.spec import ModelSource


@runtime_checkable
class LoadedVariant(Protocol):
    """A runnable model variant."""

    def predict(self, items: Sequence[Any]) -> list[Any]:
        """One output per input, for a whole batch in one call."""
        ...

    def held_out(self) -> tuple[Sequence[Any], Sequence[Any]]:
        """Held-out inputs and their true labels, never seen in training."""
        ...


class VariantLoadError(ValueError):
    """A variant's model cannot be loaded. The message names the uri."""


def load_variant(source: ModelSource) -> LoadedVariant:
    """Import ``package.module:factory`` and call the factory; the result must be a :class:`LoadedVariant`.

    Raises :class:`NotImplementedError` for kinds other than ``python`` and :class:`VariantLoadError` for a
    uri that does not resolve to a factory returning a variant.
    """
    if source.kind != "python":
        raise NotImplementedError(
            f"model {source.uri!r} is of kind {source.kind!r}: only kind 'python' variants can be loaded "
            "and profiled by this job yet"
        )
    module_name, sep, attribute = source.uri.partition(":")
    if not sep or not module_name or not attribute:
        raise VariantLoadError(f"model uri {source.uri!r} is not of the form 'package.module:factory'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise VariantLoadError(f"model uri {source.uri!r}: cannot import {module_name!r}: {exc}") from exc
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise VariantLoadError(f"model uri {source.uri!r}: {module_name!r} has no callable {attribute!r}")
    variant = factory()
    if not isinstance(variant, LoadedVariant):
        raise VariantLoadError(
            f"model uri {source.uri!r}: the factory returned {type(variant).__name__}, which lacks "
            "predict(items) and held_out()"
        )
    return variant


@runtime_checkable
class ScoredVariant(LoadedVariant, Protocol):
    """A variant whose outputs are not simply right or wrong (a detector's boxes, say) scores them itself."""

    def score(self, predictions: Sequence[Any], labels: Sequence[Any]) -> float:
        """Accuracy in [0, 1] of ``predictions`` against ``labels``."""
        ...


def accuracy(variant: LoadedVariant, inputs: Sequence[Any], labels: Sequence[Any]) -> float:
    """Held-out accuracy, predicted in one call: the variant's own :meth:`ScoredVariant.score` if it has
    one, else the fraction of predictions equal to their label."""
    if len(inputs) != len(labels):
        raise ValueError(f"{len(inputs)} held-out inputs but {len(labels)} labels")
    if len(inputs) == 0:
        raise ValueError("no held-out inputs to score")
    predictions = variant.predict(inputs)
    if len(predictions) != len(inputs):
        raise ValueError(f"predict returned {len(predictions)} outputs for {len(inputs)} inputs")
    if isinstance(variant, ScoredVariant):
        return float(variant.score(predictions, labels))
    correct = sum(bool(p == y) for p, y in zip(predictions, labels, strict=True))
    return correct / len(inputs)
