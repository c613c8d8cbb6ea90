"""The experiments and the pipelines they run on, by name, without importing them (the DAG builds its
trigger form from these at every parse)."""

from __future__ import annotations

EXPERIMENTS = ("e2e", "preferences", "predictors", "intervals")
IPA_PIPELINES = ("video", "audio-qa", "audio-sent", "sum-qa", "nlp")
DEMO_PIPELINES = ("digit-strips", "language-routing")
