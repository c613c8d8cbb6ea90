"""Synthetic profile tables for IPA's five pipelines: video, audio-qa, audio-sent, sum-qa and nlp.

**These tables are synthetic. They are not measurements.** IPA's raw profiling results were never published
(``reference/ipa.md`` 1.7), so every row here comes from a formula, with ``source="synthetic"``,
``host="synthetic"`` and ``repetitions=0``. They exist so that the shipped specs can be planned and
tested; a real deployment should profile its own models.

The formula is calibrated to the only numbers IPA published (``reference/ipa.md`` 1.7, kept in
:data:`ANCHORS` and reproduced within 10 %):

* ResNet18/34/50/101/152 at batch 1 on 1 core: latency 70/110/135/240/300 ms (taken as p99), throughput
  19/11/9/5/4 RPS;
* yolov5m on 1 core: batch 1 p99 0.347 s and 3.37 RPS; batch 8 p99 2.85 s and 3.10 RPS;
* resnet50 on 1 core: batch 8 p99 0.83 s and 10.9 RPS.

The model of one replica::

    p99(b, c)  = base * (c0 + c1*b + c2*b**2) / (c0 + c1 + c2) * (s + (1 - s) / c)
    p50        = p99 / k,   p95 = p50 + P95_POSITION * (p99 - p50)
    throughput = b / p50
    memory     = RUNTIME_MIB + weights (fp32) + b * activations per request

``base`` is the batch-1, 1-core p99 latency, ``(c0, c1, c2)`` the family's batch curve, ``s`` Amdahl's
serial fraction and ``k`` the family's p99/p50 ratio. Variants without an anchor get ``base`` from their
relative size (:data:`VARIANTS`). The absolute scale of those families is unknown; it is chosen so that
IPA's own SLA rule (:func:`ipa_sla_rule_s`, ``reference/ipa.md`` 1.5) applied to these tables gives back the
published SLAs to within about 10 %.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ipa_tasks.profiles import coerce_profile, write_profile
from ipa_tasks.spec import PipelineSpec, load_spec, parse_spec, shipped_specs_dir

PROFILED_AT = "2024-01-01T00:00:00+00:00"
"""Fixed, so that regenerating gives byte-identical files."""
BATCH_SIZES = (1, 2, 4, 8, 16, 32)
CORES = (1, 2, 4, 8)
SERIAL_FRACTION = 0.3
"""Amdahl's serial share. With it IPA's SLA rule on the video anchors gives 6.35 s (published: 6.89 s)."""
P95_POSITION = 0.6
"""Where p95 sits between p50 (0) and p99 (1)."""
RUNTIME_MIB = 400.0
"""Resident memory of an idle Python + PyTorch model server, before weights."""
MIB_PER_MILLION_PARAMS = 4e6 / 2**20
"""fp32 weights."""
IPA_SLA_FACTOR = 25.0
"""IPA's SLA sums, over stages, 5 x 5 x the mean batch-1 latency of the stage's variants (``ipa.md`` 1.5)."""


@dataclass(frozen=True)
class Family:
    """What variants of one model family share.

    ``base = fixed_s + s_per_cost * cost`` gives the batch-1, 1-core p99 latency from a variant's ``cost``
    (its unit depends on the family, see :data:`VARIANTS`).
    """

    fixed_s: float
    s_per_cost: float
    batch_curve: tuple[float, float, float]
    p99_over_p50: float
    activation_mib: float
    """Extra memory per request in a batch."""


FAMILIES: dict[str, Family] = {
    # cost = the anchor latency in ms itself. Curve and ratio fit resnet50's batch-8 anchor and the batch-1
    # throughputs (which imply p99/p50 from 1.2 for ResNet152 to 1.33 for ResNet18).
    "resnet": Family(0.0, 1e-3, (0.239, 0.759, 0.002), 1.25, 25.0),
    # cost = ultralytics' "Speed CPU b1 (ms)", scaled so that yolov5m is its anchor (0.347 s). The quadratic
    # term reproduces the measured throughput drop from batch 1 to batch 8 (3.37 -> 3.10 RPS).
    "yolov5": Family(0.0, 0.347 / 224, (0.05, 0.94, 0.01), 1.15, 120.0),
    # cost = non-embedding parameters (M): compute per token does not grow with the vocabulary. The fixed
    # part is tokenisation and pipeline overhead. Batches help little (padding), so the curve is steep.
    "text-encoder": Family(0.03, 0.0014, (0.3, 0.69, 0.01), 1.2, 10.0),
    # Autoregressive decoders (ASR, translation, summarisation) gain more from batching: each decoding
    # step is dominated by per-step overhead that a batch shares.
    "s2t": Family(0.05, 0.0061, (0.5, 0.49, 0.01), 1.2, 30.0),
    "marian": Family(0.05, 0.0125, (0.5, 0.49, 0.01), 1.2, 20.0),
    # cost = the DistilBART model card's "Inference Time (MS)" (a GPU measurement; only the ratios are used).
    "distilbart": Family(0.0, 0.0022, (0.5, 0.49, 0.01), 1.2, 20.0),
}


@dataclass(frozen=True)
class Variant:
    family: str
    params_m: float
    """All parameters (M), for memory."""
    cost: float
    """Relative compute cost, in the family's unit (see :data:`FAMILIES`)."""


VARIANTS: dict[str, Variant] = {
    # torchvision model table (parameters); cost = IPA's measured latency (reference/ipa.md 1.7).
    "resnet18": Variant("resnet", 11.7, 70.0),
    "resnet34": Variant("resnet", 21.8, 110.0),
    "resnet50": Variant("resnet", 25.6, 135.0),
    "resnet101": Variant("resnet", 44.5, 240.0),
    "resnet152": Variant("resnet", 60.2, 300.0),
    # ultralytics/yolov5 README, 640 px: parameters (M) and "Speed CPU b1 (ms)" 45/98/224/430/766.
    "yolov5n": Variant("yolov5", 1.9, 45.0),
    "yolov5s": Variant("yolov5", 7.2, 98.0),
    "yolov5m": Variant("yolov5", 21.2, 224.0),
    "yolov5l": Variant("yolov5", 46.5, 430.0),
    "yolov5x": Variant("yolov5", 86.7, 766.0),
    # fairseq S2T LibriSpeech recipe: s2t_transformer_s/m/l have 30M/71M/268M parameters (10k vocabulary,
    # so nearly all of them are compute).
    "facebook-s2t-small-librispeech-asr": Variant("s2t", 30.0, 30.0),
    "facebook-s2t-medium-librispeech-asr": Variant("s2t", 71.0, 71.0),
    "facebook-s2t-large-librispeech-asr": Variant("s2t", 268.0, 268.0),
    # 12-layer base encoders: 85M non-embedding parameters (12 x 7.1M); RoBERTa 125M in all, XLM-R 278M
    # (a 250k-token embedding). DistilBERT has 6 of those layers (43M of 66M). The Souvikcmsa models are
    # assumed to be the architectures their names say.
    "deepset-roberta-base-squad2": Variant("text-encoder", 125.0, 85.0),
    "deepset-xlm-roberta-base-squad2": Variant("text-encoder", 278.0, 85.0),
    "distilbert-base-uncased-finetuned-sst-2-english": Variant("text-encoder", 66.0, 43.0),
    "Souvikcmsa-BERT_sentiment_analysis": Variant("text-encoder", 110.0, 85.0),
    "Souvikcmsa-SentimentAnalysisDistillBERT": Variant("text-encoder", 66.0, 43.0),
    "Souvikcmsa-Roberta_Sentiment_Analysis": Variant("text-encoder", 125.0, 85.0),
    "dinalzein-xlm-roberta-base-finetuned-language-identification": Variant("text-encoder", 278.0, 85.0),
    # Marian transformer-base (6+6 layers, d_model 512) and transformer-big (d_model 1024), approximate:
    # 75M and 230M parameters, 44M and 176M without the shared embedding.
    "Helsinki-NLP-opus-mt-fr-en": Variant("marian", 75.0, 44.0),
    "Helsinki-NLP-opus-mt-tc-big-fr-en": Variant("marian", 230.0, 176.0),
    # DistilBART model card ("Metrics for DistilBART models"): parameters (M) and inference time (ms).
    # xsum-1-1 is not in that table: 83M parameters (its 332 MB fp32 checkpoint) and 81 ms from a
    # least-squares fit of the card's times on the encoder and decoder layer counts (70.8 + 0.7 + 9.6).
    "sshleifer-distilbart-xsum-1-1": Variant("distilbart", 83.0, 81.0),
    "sshleifer-distilbart-xsum-12-1": Variant("distilbart", 222.0, 90.0),
    "sshleifer-distilbart-xsum-6-6": Variant("distilbart", 230.0, 132.0),
    "sshleifer-distilbart-xsum-12-3": Variant("distilbart", 255.0, 106.0),
    "sshleifer-distilbart-xsum-9-6": Variant("distilbart", 268.0, 136.0),
    "sshleifer-distilbart-xsum-12-6": Variant("distilbart", 306.0, 137.0),
}

_S2T = tuple(f"facebook-s2t-{size}-librispeech-asr" for size in ("small", "medium", "large"))
_QA = ("deepset-roberta-base-squad2", "deepset-xlm-roberta-base-squad2")
_SUM = tuple(f"sshleifer-distilbart-xsum-{size}" for size in ("1-1", "12-1", "6-6", "12-3", "9-6", "12-6"))

PIPELINES: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "video": (
        ("crop", ("yolov5n", "yolov5s", "yolov5m", "yolov5l", "yolov5x")),
        ("classification", ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")),
    ),
    "audio-qa": (("audio", _S2T), ("nlp-qa", _QA)),
    "audio-sent": (
        ("audio", _S2T),
        (
            "nlp-sent",
            (
                "distilbert-base-uncased-finetuned-sst-2-english",
                "Souvikcmsa-BERT_sentiment_analysis",
                "Souvikcmsa-SentimentAnalysisDistillBERT",
                "Souvikcmsa-Roberta_Sentiment_Analysis",
            ),
        ),
    ),
    "sum-qa": (("nlp-sum", _SUM), ("nlp-qa", _QA)),
    "nlp": (
        ("nlp-li", ("dinalzein-xlm-roberta-base-finetuned-language-identification",)),
        ("nlp-trans", ("Helsinki-NLP-opus-mt-fr-en", "Helsinki-NLP-opus-mt-tc-big-fr-en")),
        ("nlp-sum", _SUM),
    ),
}
"""Stages (in order) and the variants the optimizer sees, per pipeline (``reference/ipa.md`` section 3)."""


@dataclass(frozen=True)
class Anchor:
    """One published measurement of one replica that the synthetic tables must reproduce."""

    variant: str
    batch_size: int
    cores: int
    latency_p99_s: float | None
    throughput_rps: float | None


ANCHORS: tuple[Anchor, ...] = (
    # reference/ipa.md 1.7: paper Fig. 2, ResNet at batch 1 on 1 core.
    Anchor("resnet18", 1, 1, 0.070, 19.0),
    Anchor("resnet34", 1, 1, 0.110, 11.0),
    Anchor("resnet50", 1, 1, 0.135, 9.0),
    Anchor("resnet101", 1, 1, 0.240, 5.0),
    Anchor("resnet152", 1, 1, 0.300, 4.0),
    # reference/ipa.md 1.7: notebook outputs at a load of 20 RPS.
    Anchor("yolov5m", 1, 1, 0.347, 3.37),
    Anchor("yolov5m", 8, 1, 2.85, 3.10),
    Anchor("resnet50", 8, 1, 0.83, 10.9),
)
ANCHOR_TOLERANCE = 0.10


def base_latency_s(variant: str) -> float:
    """p99 latency at batch 1 on 1 core."""
    v = VARIANTS[variant]
    family = FAMILIES[v.family]
    return family.fixed_s + family.s_per_cost * v.cost


def batch_factor(family: Family, batch_size: int) -> float:
    """Latency of a batch relative to a single request, on the same cores."""
    c0, c1, c2 = family.batch_curve
    return (c0 + c1 * batch_size + c2 * batch_size**2) / (c0 + c1 + c2)


def core_factor(cores: int) -> float:
    """Latency on ``cores`` cores relative to one core (Amdahl's law)."""
    return SERIAL_FRACTION + (1.0 - SERIAL_FRACTION) / cores


def latency_quantiles_s(variant: str, batch_size: int, cores: int) -> tuple[float, float, float]:
    """(p50, p95, p99) latency of one batch."""
    family = FAMILIES[VARIANTS[variant].family]
    p99 = base_latency_s(variant) * batch_factor(family, batch_size) * core_factor(cores)
    p50 = p99 / family.p99_over_p50
    return p50, p50 + P95_POSITION * (p99 - p50), p99


def memory_mib(variant: str, batch_size: int) -> float:
    v = VARIANTS[variant]
    return RUNTIME_MIB + v.params_m * MIB_PER_MILLION_PARAMS + batch_size * FAMILIES[v.family].activation_mib


def _row(pipeline: str, stage: str, variant: str, batch_size: int, cores: int) -> dict[str, object]:
    p50, p95, p99 = latency_quantiles_s(variant, batch_size, cores)
    return {
        "pipeline": pipeline,
        "stage": stage,
        "variant": variant,
        "batch_size": batch_size,
        "cores": cores,
        "latency_p50_s": p50,
        "latency_p95_s": p95,
        "latency_p99_s": p99,
        "throughput_rps": batch_size / p50,
        "memory_mb": memory_mib(variant, batch_size),
        # Accuracy belongs to the spec (it is published, not profiled).
        "accuracy": np.nan,
        "repetitions": 0,
        "source": "synthetic",
        "profiled_at": PROFILED_AT,
        "host": "synthetic",
    }


def synthetic_profile(pipeline: str) -> pd.DataFrame:
    """The synthetic profile table of one of IPA's pipelines, every batch size and core count."""
    if pipeline not in PIPELINES:
        raise ValueError(f"unknown pipeline {pipeline!r}; choose one of {', '.join(PIPELINES)}")
    rows = [
        _row(pipeline, stage, variant, b, c)
        for stage, variants in PIPELINES[pipeline]
        for variant in variants
        for b in BATCH_SIZES
        for c in CORES
    ]
    return coerce_profile(pd.DataFrame(rows), f"synthetic {pipeline}")


def profile_filename(pipeline: str) -> str:
    return f"{pipeline}.synthetic-profile.csv"


def write_synthetic_profiles(directory: Path) -> list[Path]:
    """Write ``<pipeline>.synthetic-profile.csv`` for every pipeline into ``directory``."""
    return [write_profile(synthetic_profile(p), Path(directory) / profile_filename(p)) for p in PIPELINES]


def ipa_sla_rule_s(pipeline: str, cores: int = max(CORES)) -> float:
    """IPA's SLA rule on the synthetic table: 25 x sum over stages of the mean batch-1 p99 on ``cores``.

    IPA took the last profiled core count, usually the largest (``reference/ipa.md`` 1.5).
    """
    return IPA_SLA_FACTOR * sum(
        float(np.mean([latency_quantiles_s(v, 1, cores)[2] for v in variants]))
        for _, variants in PIPELINES[pipeline]
    )


def scaled_video_pipeline(
    n_stages: int,
    n_variants: int,
    batch_sizes: Sequence[int] = (1, 2, 4, 8, 16, 32, 64),
    cores: Sequence[int] = (1, 2, 4),
    seed: int = 0,
) -> tuple[PipelineSpec, pd.DataFrame]:
    """A pipeline of any size cloned from the video pipeline, as IPA's scalability experiment built them.

    Stages alternate between the video pipeline's detector and classifier; variant ``j`` of a stage is a
    copy of the family's ``j mod 5``-th variant with its latency and accuracy perturbed by a few percent
    (seeded), so clones trade off against each other instead of being exact duplicates. The SLA is the
    video SLA per stage. Synthetic, like everything in this module.
    """
    video = load_spec(shipped_specs_dir() / "video.yaml")
    rng = np.random.default_rng(seed)
    stages, rows = [], []
    for s in range(n_stages):
        template = video.stages[s % len(video.stages)]
        variants = []
        for j in range(n_variants):
            original = template.variants[j % len(template.variants)]
            name = f"{original.name}-{j // len(template.variants)}"
            slowdown, accuracy_factor = rng.uniform(0.95, 1.05), rng.uniform(0.98, 1.02)
            variants.append(
                {
                    "name": name,
                    "model": {"kind": "reference", "uri": original.model.uri},
                    "accuracy": min(1.0, original.accuracy * accuracy_factor),
                }
            )
            for b in batch_sizes:
                for c in cores:
                    row = _row("scaled", f"stage{s}", original.name, b, c)
                    for column in ("latency_p50_s", "latency_p95_s", "latency_p99_s"):
                        row[column] *= slowdown
                    row["throughput_rps"] /= slowdown
                    rows.append({**row, "variant": name})
        stages.append(
            {
                "name": f"stage{s}",
                "variants": variants,
                "batch_sizes": list(batch_sizes),
                "cores": list(cores),
                "replicas": {"min": 1, "max": 100},
            }
        )
    spec = parse_spec(
        {
            "name": "scaled",
            "description": f"{n_stages} x {n_variants} clone of the video pipeline (synthetic)",
            "sla_s": video.sla_s / len(video.stages) * n_stages,
            "objective": video.objective.model_dump(),
            "stages": stages,
        }
    )
    return spec, coerce_profile(pd.DataFrame(rows), "synthetic scaled pipeline")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ipa_tasks.synthetic_profiles",
        description="Write the SYNTHETIC (not measured) profile tables of IPA's five pipelines, "
        "calibrated to the latency anchors IPA published.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=shipped_specs_dir(),
        help="folder to write <pipeline>.synthetic-profile.csv into (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    for path in write_synthetic_profiles(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
