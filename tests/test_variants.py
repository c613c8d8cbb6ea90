"""Loading model variants by their spec source, and scoring them on their held-out data."""

from __future__ import annotations

import pytest

from ipa_tasks.spec import ModelSource
from ipa_tasks.variants import LoadedVariant, VariantLoadError, accuracy, load_variant

DIGITS = "tests.profiling_jobs.digits_variant"


def test_python_source_loads_a_variant_that_predicts_a_batch() -> None:
    variant = load_variant(ModelSource(kind="python", uri=f"{DIGITS}:logistic"))
    assert isinstance(variant, LoadedVariant)
    inputs, labels = variant.held_out()
    assert len(inputs) == len(labels) > 0
    assert len(variant.predict(inputs[:7])) == 7


def test_accuracy_is_the_fraction_of_correct_predictions() -> None:
    variant = load_variant(ModelSource(kind="python", uri=f"{DIGITS}:logistic"))
    inputs, labels = variant.held_out()
    expected = float((variant.model.predict(inputs) == labels).mean())
    assert accuracy(variant, inputs, labels) == pytest.approx(expected)
    assert accuracy(variant, inputs, labels) > 0.9


class _Constant:
    """Predicts 1 for everything; held-out labels 1, 1, 0, 0."""

    def predict(self, items):
        return [1 for _ in items]

    def held_out(self):
        return [10, 11, 12, 13], [1, 1, 0, 0]


def test_accuracy_on_known_predictions() -> None:
    assert accuracy(_Constant(), *_Constant().held_out()) == 0.5


def test_accuracy_rejects_mismatched_or_empty_inputs() -> None:
    with pytest.raises(ValueError, match="labels"):
        accuracy(_Constant(), [1, 2], [1])
    with pytest.raises(ValueError, match="no held-out"):
        accuracy(_Constant(), [], [])


@pytest.mark.parametrize("kind", ["reference", "mlflow"])
def test_other_kinds_cannot_be_profiled_yet(kind: str) -> None:
    with pytest.raises(NotImplementedError, match=f"kind '{kind}'.*only kind 'python'"):
        load_variant(ModelSource(kind=kind, uri="yolov5n"))


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("no_colon_here", "not of the form"),
        ("pkg.module:", "not of the form"),
        ("no_such_package_xyz.models:factory", "cannot import 'no_such_package_xyz.models'"),
        (f"{DIGITS}:missing_factory", "has no callable 'missing_factory'"),
        (f"{DIGITS}:SEED", "has no callable 'SEED'"),
        (f"{DIGITS}:not_a_variant", "lacks predict"),
    ],
)
def test_bad_uri_names_the_uri(uri: str, message: str) -> None:
    with pytest.raises(VariantLoadError, match=message) as raised:
        load_variant(ModelSource(kind="python", uri=uri))
    assert repr(uri) in str(raised.value)
