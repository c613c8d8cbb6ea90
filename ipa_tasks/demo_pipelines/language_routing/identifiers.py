"""The pretrained language identifiers of stage ``identify``, all run offline from their installed wheels.

- ``lid_cld2``: Google's Compact Language Detector 2 (C++, model compiled into the extension), best-effort
  mode: without it cld2 abstains (``un``) on 7.6 % of these short UI strings.
- ``lid_py3langid``: langid.py's naive Bayes over byte n-grams, numpy.
- ``lid_lingua``: Lingua's high-accuracy mode (Rust, 1- to 5-gram models), restricted to the data set's
  languages: all 75 preloaded take 1.24 GB, the 46 still ~950 MB (they are the large models). Restricting
  also closes its label set (it can only name a language we have a classifier for), which the open-set
  cld2 and py3langid cannot.

Each identifier labels one string per call (none of them batches natively), returning a normalised code.
"""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ipa_tasks.demo_pipelines.language_routing.catalogs import Sample, read_held_out, write_held_out
from ipa_tasks.demo_pipelines.language_routing.languages import UNKNOWN, normalise_language_code
from ipa_tasks.variants import VariantLoadError

IDENTIFIER_FILE = "identifier.json"
PROBE = "Bitte geben Sie einen gültigen Benutzernamen und ein Passwort ein."
"""A sentence every identifier must call German after loading, so a broken install fails the build."""


class Identifier(Protocol):
    def identify(self, text: str) -> str:
        """The normalised language code of ``text``, or ``un``."""
        ...

    def languages(self) -> set[str]:
        """Every normalised code it can answer, as loaded."""
        ...


class Cld2Identifier:
    def __init__(self, languages: Sequence[str] | None = None) -> None:
        import pycld2

        self._module = pycld2

    def identify(self, text: str) -> str:
        try:
            details = self._module.detect(text, bestEffort=True)[2]
        except self._module.error:  # invalid UTF-8 (lone surrogates): cld2 rejects rather than guesses
            return UNKNOWN
        return normalise_language_code(details[0][1])

    def languages(self) -> set[str]:
        detectable = set(self._module.DETECTED_LANGUAGES)
        return {normalise_language_code(code) for name, code in self._module.LANGUAGES if name in detectable}


class Py3langidIdentifier:
    def __init__(self, languages: Sequence[str] | None = None) -> None:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        # An own instance rather than py3langid.classify's module global, whose language set any other
        # caller in the process could restrict.
        self._model = LanguageIdentifier.from_model_file(MODEL_FILE)

    def identify(self, text: str) -> str:
        return normalise_language_code(self._model.classify(text)[0])

    def languages(self) -> set[str]:
        return {normalise_language_code(code) for code in self._model.labels}


class LinguaIdentifier:
    def __init__(self, languages: Sequence[str] | None = None) -> None:
        from lingua import IsoCode639_1, LanguageDetectorBuilder

        chosen = sorted(languages) if languages is not None else sorted(self.supported())
        self._languages = set(chosen)
        codes = [getattr(IsoCode639_1, code.upper()) for code in chosen]
        # Preloaded so that the first requests of a replica do not pay for loading models lazily.
        builder = LanguageDetectorBuilder.from_iso_codes_639_1(*codes).with_preloaded_language_models()
        self._detector = builder.build()

    def identify(self, text: str) -> str:
        # detect_language_of, not detect_languages_in_parallel_of: the latter uses a rayon pool of every
        # core, which the profiling job's thread pinning cannot limit.
        language = self._detector.detect_language_of(text)
        return UNKNOWN if language is None else language.iso_code_639_1.name.lower()

    def languages(self) -> set[str]:
        return set(self._languages)

    @staticmethod
    def supported() -> set[str]:
        from lingua import Language

        return {language.iso_code_639_1.name.lower() for language in Language.all()}


@dataclass(frozen=True)
class IdentifierRecipe:
    distribution: str
    """The installed package whose version the build records."""
    model_files: Callable[[], list[Path]]
    """Where its model data lives, for the variant's size (nothing is copied)."""
    open: Callable[[Sequence[str] | None], Identifier]
    """Load it; restricted to the given languages when ``restricted_by`` says it can be."""
    restricted_by: Callable[[], set[str]] | None = None
    """For an identifier built for the data set's languages only: every language it could know."""


def _package_file(module: str, *parts: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None, module
    return Path(spec.origin).parent.joinpath(*parts)


def _extension(module: str, stem: str) -> Callable[[], list[Path]]:
    return lambda: sorted(_package_file(module).glob(f"{stem}*.so"))


IDENTIFIERS: dict[str, IdentifierRecipe] = {
    "lid_cld2": IdentifierRecipe(
        distribution="pycld2", model_files=_extension("pycld2", "_pycld2"), open=Cld2Identifier
    ),
    "lid_py3langid": IdentifierRecipe(
        distribution="py3langid",
        model_files=lambda: [_package_file("py3langid", "data", "model.npz.xz")],
        open=Py3langidIdentifier,
    ),
    "lid_lingua": IdentifierRecipe(
        distribution="lingua-language-detector",
        # The Rust extension embeds the models of all 75 languages; only the chosen ones are loaded.
        model_files=_extension("lingua", "lingua"),
        open=LinguaIdentifier,
        restricted_by=LinguaIdentifier.supported,
    ),
}


class IdentifierVariant:
    """A loaded identifier as a :class:`~ipa_tasks.variants.LoadedVariant`: strings in, language codes out."""

    def __init__(self, name: str, identifier: Identifier, held_out: Sequence[Sample]) -> None:
        self.name = name
        self.identifier = identifier
        self.held_out_samples = tuple(held_out)

    def predict(self, items: Sequence[str]) -> list[str]:
        identify = self.identifier.identify
        return [identify(text) for text in items]

    def held_out(self) -> tuple[list[str], list[str]]:
        return [s.text for s in self.held_out_samples], [s.language for s in self.held_out_samples]


def _installed_version(distribution: str) -> str:
    return importlib.metadata.version(distribution)


def _open_checked(variant: str, languages: Sequence[str] | None) -> Identifier:
    identifier = IDENTIFIERS[variant].open(languages)
    probe = identifier.identify(PROBE)
    if probe != "de":
        raise VariantLoadError(f"language-routing/{variant}: the installed model calls German {probe!r}")
    return identifier


def build_identifier(
    variant: str, directory: Path, data_languages: Sequence[str], test: Sequence[Sample]
) -> tuple[IdentifierVariant, dict[str, str | int | float]]:
    """Load the installed identifier offline, check it names the probe, and write what it covers and the
    held-out split into ``directory``. Returns the loaded variant and facts for the build record."""
    recipe = IDENTIFIERS[variant]
    restricted = None
    if recipe.restricted_by is not None:
        restricted = sorted(set(data_languages) & recipe.restricted_by())
    identifier = _open_checked(variant, restricted)
    known = identifier.languages()
    record = {
        "variant": variant,
        "distribution": recipe.distribution,
        "version": _installed_version(recipe.distribution),
        "restricted_to": restricted,
        "languages_known": sorted(known),
        "data_set_languages_missing": sorted(set(data_languages) - known),
    }
    (directory / IDENTIFIER_FILE).write_text(json.dumps(record, indent=2))
    write_held_out(directory, test)
    params: dict[str, str | int | float] = {
        "distribution": recipe.distribution,
        "version": record["version"],
        "languages_known": len(known),
        "data_set_languages_missing": len(record["data_set_languages_missing"]),
    }
    return IdentifierVariant(variant, identifier, test), params


def load_identifier(variant: str, directory: Path) -> IdentifierVariant:
    record = json.loads((directory / IDENTIFIER_FILE).read_text())
    recipe = IDENTIFIERS[variant]
    installed = _installed_version(recipe.distribution)
    if installed != record["version"]:
        # The recorded accuracy belongs to the other version's model.
        raise VariantLoadError(
            f"language-routing/{variant} was built with {recipe.distribution} {record['version']} but "
            f"{installed} is installed; rebuild it: ipa build-variants language-routing --variants {variant}"
        )
    identifier = _open_checked(variant, record["restricted_to"])
    return IdentifierVariant(variant, identifier, read_held_out(directory))


def model_size_mb(variant: str) -> float:
    return sum(path.stat().st_size for path in IDENTIFIERS[variant].model_files()) / 1e6
