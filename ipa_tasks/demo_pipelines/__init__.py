"""The two demo pipelines built from real models and real data that ship inside PyPI wheels.

- ``digit-strips`` (:mod:`ipa_tasks.demo_pipelines.digit_strips`): a detector finds the digits in a strip of
  handwritten MNIST digits, a classifier reads each crop; the detector's crops really feed the classifier.
- ``language-routing`` (:mod:`ipa_tasks.demo_pipelines.language_routing`): a pretrained language identifier
  picks the language of a UI string, then that language's text classifier labels it; each text is routed by
  the *predicted* language.

Each is a :class:`DemoPipeline`: it builds (trains, or loads a pretrained model and checks it) one variant
into a cache folder, loads a built variant for the profiling job, and measures end-to-end accuracy of whole
configurations on held-out inputs. Its spec is ``ipa_tasks/pipelines/<name>.yaml``, whose variants are
``kind: python`` models whose factories load from the cache of :func:`ipa_tasks.settings.current_settings`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ipa_tasks.accuracy import Configuration, MeasuredAccuracyTable
from ipa_tasks.variants import LoadedVariant

Log = Callable[[str], None]


@dataclass(frozen=True)
class BuiltVariant:
    """What building one variant produced. ``directory`` holds the model files and ``build.json``."""

    pipeline: str
    stage: str
    variant: str
    directory: Path
    accuracy: float
    """On the stage's held-out inputs, measured after building."""
    build_seconds: float
    size_mb: float
    """Model files on disk (for an installed pretrained model, its data files)."""
    params: dict[str, str | int | float] = field(default_factory=dict)
    """Hyper-parameters and facts worth comparing in MLflow (parameter count, training items, ...)."""


class DemoPipeline(Protocol):
    name: str
    """The spec's ``name`` (``ipa_tasks/pipelines/<name>.yaml``)."""
    recipe_version: str
    """Changes whenever building would give a different model, so stale caches are rebuilt."""

    def build_variant(self, stage: str, variant: str, directory: Path, log: Log) -> BuiltVariant:
        """Train or load ``variant`` of ``stage``, write its files into the empty ``directory``, measure
        its held-out accuracy. Deterministic for the pipeline's seed."""
        ...

    def load_variant(self, stage: str, variant: str, directory: Path) -> LoadedVariant:
        """The built variant in ``directory``, ready to predict and carrying its held-out data."""
        ...

    def end_to_end_accuracy(
        self, configurations: Sequence[Configuration], directories: dict[tuple[str, str], Path], log: Log
    ) -> MeasuredAccuracyTable:
        """Measured end-to-end accuracy of each configuration (one variant per stage, in stage order) on
        the pipeline's held-out inputs, each stage fed what the previous stage really produced.
        ``directories`` maps (stage, variant) to the built variant's folder."""
        ...
