"""The language-routing demo pipeline: building, loading and end-to-end scoring of its variants.

The identifier and classifier modules are imported only by the stage that needs them, so that a process
profiling ``lid_cld2`` (8 MB over the bare process) does not also carry scikit-learn (~100 MB) in its
measured peak memory.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from threadpoolctl import threadpool_limits

from ipa_tasks.accuracy import Configuration, MeasuredAccuracyTable
from ipa_tasks.demo_pipelines import BuiltVariant, Log
from ipa_tasks.demo_pipelines.language_routing.catalogs import Sample, load_dataset
from ipa_tasks.variants import LoadedVariant, accuracy

if TYPE_CHECKING:
    from ipa_tasks.demo_pipelines.language_routing.classifiers import RoutedClassifier
    from ipa_tasks.demo_pipelines.language_routing.identifiers import IdentifierVariant

NAME = "language-routing"
IDENTIFY = "identify"
CLASSIFY = "classify"
STAGE_VARIANTS: dict[str, tuple[str, ...]] = {
    IDENTIFY: ("lid_cld2", "lid_py3langid", "lid_lingua"),
    CLASSIFY: ("txt_words", "txt_nb", "txt_lr", "txt_mix"),
}


def _check(stage: str, variant: str) -> None:
    if stage not in STAGE_VARIANTS:
        raise KeyError(f"{NAME} has no stage {stage!r} (stages: {', '.join(STAGE_VARIANTS)})")
    if variant not in STAGE_VARIANTS[stage]:
        known = ", ".join(STAGE_VARIANTS[stage])
        raise KeyError(f"{NAME} stage {stage!r} has no variant {variant!r} (variants: {known})")


class LanguageRoutingPipeline:
    """:class:`~ipa_tasks.demo_pipelines.DemoPipeline` ``language-routing``: identify -> classify."""

    name = NAME
    recipe_version = "2"
    stages = (IDENTIFY, CLASSIFY)

    def build_variant(self, stage: str, variant: str, directory: Path, log: Log) -> BuiltVariant:
        _check(stage, variant)
        started = time.perf_counter()
        data = load_dataset()
        log(f"{NAME}: {len(data.train)} training and {len(data.test)} test strings")
        # One thread: other jobs share the machine, and one replica is one core.
        with threadpool_limits(limits=1):
            if stage == IDENTIFY:
                held_out_accuracy, size_mb, params = self._build_identifier(
                    variant, directory, data.languages(), data.test, log
                )
            else:
                held_out_accuracy, size_mb, params = self._build_classifier(
                    variant, directory, data.train, data.test, log
                )
        return BuiltVariant(
            pipeline=NAME,
            stage=stage,
            variant=variant,
            directory=directory,
            accuracy=held_out_accuracy,
            build_seconds=time.perf_counter() - started,
            size_mb=size_mb,
            params=params,
        )

    @staticmethod
    def _build_identifier(
        variant: str, directory: Path, languages: list[str], test: Sequence[Sample], log: Log
    ) -> tuple[float, float, dict[str, str | int | float]]:
        from ipa_tasks.demo_pipelines.language_routing.identifiers import build_identifier, model_size_mb

        loaded, params = build_identifier(variant, directory, languages, test)
        texts, truth = loaded.held_out()
        predicted = loaded.predict(texts)
        right = sum(p == t for p, t in zip(predicted, truth, strict=True))
        known = set(languages)
        outside = Counter(p for p in predicted if p not in known)
        params["test_items"] = len(texts)
        params["outside_data_set"] = sum(outside.values())
        params["outside_most_common"] = ", ".join(f"{code} {n}" for code, n in outside.most_common(5))
        log(
            f"{NAME}/{variant}: {sum(outside.values())} of {len(texts)} test strings named a language "
            f"without a classifier ({params['outside_most_common'] or 'none'})"
        )
        return right / len(texts), model_size_mb(variant), params

    @staticmethod
    def _build_classifier(
        variant: str, directory: Path, train: Sequence[Sample], test: Sequence[Sample], log: Log
    ) -> tuple[float, float, dict[str, str | int | float]]:
        from ipa_tasks.demo_pipelines.language_routing.classifiers import (
            CLASSIFIERS,
            FALLBACK,
            RoutedClassifier,
            save_classifier,
            train_models,
        )

        started = time.perf_counter()
        models = train_models(variant, train)
        train_seconds = time.perf_counter() - started
        files = save_classifier(directory, models, test)
        recipe = CLASSIFIERS[variant]
        loaded = RoutedClassifier(variant, models, test, with_multilingual=recipe.with_multilingual)
        oracle = accuracy(loaded, *loaded.held_out())
        multilingual = sum(
            str(p) == s.label
            for p, s in zip(models[FALLBACK].predict([s.text for s in test]), test, strict=True)
        ) / len(test)
        log(
            f"{NAME}/{variant}: {len(models) - 1} language models and the fallback trained in "
            f"{train_seconds:.1f} s; "
            f"routed by the true language {oracle:.4f}, multilingual model alone {multilingual:.4f}"
        )
        params: dict[str, str | int | float] = {
            "family": recipe.family,
            "language_models": len(models) - 1,
            "train_items": len(train),
            "test_items": len(test),
            "train_seconds": round(train_seconds, 2),
            "multilingual_accuracy": multilingual,
        }
        return oracle, files[0].stat().st_size / 1e6, params

    def load_variant(self, stage: str, variant: str, directory: Path) -> LoadedVariant:
        _check(stage, variant)
        if stage == IDENTIFY:
            from ipa_tasks.demo_pipelines.language_routing.identifiers import load_identifier

            return load_identifier(variant, directory)
        from ipa_tasks.demo_pipelines.language_routing.classifiers import load_classifier

        return load_classifier(variant, directory)

    def end_to_end_accuracy(
        self, configurations: Sequence[Configuration], directories: dict[tuple[str, str], Path], log: Log
    ) -> MeasuredAccuracyTable:
        from ipa_tasks.demo_pipelines.language_routing.classifiers import load_classifier
        from ipa_tasks.demo_pipelines.language_routing.identifiers import load_identifier
        from ipa_tasks.demo_pipelines.language_routing.routing import end_to_end_grid

        pairs: list[tuple[str, str]] = []
        for configuration in configurations:
            if len(configuration) != 2:
                raise ValueError(f"{NAME}: a configuration is (identifier, classifier), got {configuration}")
            _check(IDENTIFY, configuration[0])
            _check(CLASSIFY, configuration[1])
            pairs.append((configuration[0], configuration[1]))
        identifiers = {
            i: load_identifier(i, directories[(IDENTIFY, i)]) for i in sorted({i for i, _ in pairs})
        }
        classifiers = {
            c: load_classifier(c, directories[(CLASSIFY, c)]) for c in sorted({c for _, c in pairs})
        }
        test = _common_test_set(identifiers, classifiers)
        with threadpool_limits(limits=1):
            results = end_to_end_grid(identifiers, classifiers, pairs, test, log)
        table = MeasuredAccuracyTable(pipeline=NAME, stages=self.stages)
        for (identifier, classifier), result in results.items():
            table.record((identifier, classifier), result.accuracy)
        return table


def _common_test_set(
    identifiers: dict[str, IdentifierVariant], classifiers: dict[str, RoutedClassifier]
) -> tuple[Sample, ...]:
    """The classifiers' held-out samples (they carry the labels), after checking that every variant was
    built on the same split: end-to-end accuracy of variants scored on different texts means nothing."""
    test: tuple[Sample, ...] | None = None
    for classifier in classifiers.values():
        samples = classifier.held_out_samples
        if test is not None and samples != test:
            raise ValueError(
                f"{NAME}: {classifier.name} was built on another test split; rebuild the variants"
            )
        test = samples
    assert test is not None
    for identifier in identifiers.values():
        if [s.text for s in identifier.held_out_samples] != [s.text for s in test]:
            raise ValueError(
                f"{NAME}: {identifier.name} was built on another test split; rebuild the variants"
            )
    return test
