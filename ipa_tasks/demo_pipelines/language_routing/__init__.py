"""Demo pipeline ``language-routing``: a pretrained language identifier names the language of a Django UI
string, then that language's text classifier says which Django component it comes from.

Stages and variants (``ipa_tasks/pipelines/language-routing.yaml``; ``docs/demo-pipelines.md``):

- ``identify``: ``lid_cld2``, ``lid_py3langid``, ``lid_lingua`` (:mod:`.identifiers`), pretrained and
  installed; building one checks it loads offline and measures it.
- ``classify``: ``txt_words``, ``txt_nb``, ``txt_lr``, ``txt_mix`` (:mod:`.classifiers`), one small linear
  model per language trained on :mod:`.catalogs`, plus a multilingual fallback; each variant is more accurate
  and slower than the one before.

Each text is routed by the *predicted* language (:func:`.routing.route_and_classify`). The functions below
are the spec's ``kind: python`` factories: they load a variant built by ``ipa build-variants``.
"""

from __future__ import annotations

from ipa_tasks.demo_pipelines.language_routing.pipeline import (
    CLASSIFY,
    IDENTIFY,
    NAME,
    LanguageRoutingPipeline,
)
from ipa_tasks.variant_cache import load_cached
from ipa_tasks.variants import LoadedVariant

PIPELINE = LanguageRoutingPipeline()


def lid_cld2() -> LoadedVariant:
    return load_cached(NAME, IDENTIFY, "lid_cld2")


def lid_py3langid() -> LoadedVariant:
    return load_cached(NAME, IDENTIFY, "lid_py3langid")


def lid_lingua() -> LoadedVariant:
    return load_cached(NAME, IDENTIFY, "lid_lingua")


def txt_words() -> LoadedVariant:
    return load_cached(NAME, CLASSIFY, "txt_words")


def txt_nb() -> LoadedVariant:
    return load_cached(NAME, CLASSIFY, "txt_nb")


def txt_lr() -> LoadedVariant:
    return load_cached(NAME, CLASSIFY, "txt_lr")


def txt_mix() -> LoadedVariant:
    return load_cached(NAME, CLASSIFY, "txt_mix")
