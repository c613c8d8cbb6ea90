"""What each demo pipeline's stage hands to the next, for the router of the serving runtime.

In-process, the pipelines wire their stages in :mod:`.digit_strips.reading` and :mod:`.language_routing.
routing`; served, every stage is its own server and the router must do the same wiring between them:

* ``digit-strips``: the detector answers one ``Detections`` per strip (``{"boxes", "crops"}`` once
  encoded); the classifier's items are the crops, one per detected digit, in reading order;
* ``language-routing``: the identifier answers a language per text; the classifier's items are
  ``(language, text)`` pairs, the text being the identifier's own input.

Only numpy and plain values here: the router imports this, and must not import torch or the models.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

Handoff = Callable[[str, Sequence[Any], Sequence[Any]], list[Any]]
"""(stage, its items, its outputs), decoded -> the next stage's items, decoded."""


def digit_strips(stage: str, items: Sequence[Any], outputs: Sequence[Any]) -> list[Any]:
    if stage != "detect":
        raise ValueError(f"digit-strips has no stage after {stage!r}")
    return [crop for detections in outputs for crop in _field(detections, "crops")]


def language_routing(stage: str, items: Sequence[Any], outputs: Sequence[Any]) -> list[Any]:
    if stage != "identify":
        raise ValueError(f"language-routing has no stage after {stage!r}")
    if len(items) != len(outputs):
        raise ValueError(f"the identifier answered {len(outputs)} languages for {len(items)} texts")
    return [[language, text] for language, text in zip(outputs, items, strict=True)]


HANDOFFS: dict[str, Handoff] = {"digit-strips": digit_strips, "language-routing": language_routing}


def handoff_for(pipeline: str) -> Handoff | None:
    """The pipeline's handoff, or None for a pipeline whose outputs follow the router's default rule."""
    return HANDOFFS.get(pipeline)


def _field(value: Any, name: str) -> Any:
    if isinstance(value, dict) and name in value:
        return value[name]
    if hasattr(value, name):
        return getattr(value, name)
    raise ValueError(f"expected a detector's answer with {name!r}, got {type(value).__name__}")
