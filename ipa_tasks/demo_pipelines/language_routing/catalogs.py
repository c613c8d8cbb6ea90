"""The data set: real human translations of Django's user-interface strings, read from the ``.po`` files
that ship inside the Django wheel.

Every sample is (language, text, component label). The label is the group of Django components whose
catalogue holds the string (``admin`` for the admin and admindocs apps, ``auth``, ``gis`` ...): a weak topic
signal, since many strings ("This field is required.") could belong anywhere, so no classifier gets much
above 0.8.

Train and test are split by the English source string (``msgid``): all translations of one source land in
the same split, so no test sentence has its German twin in the training set of the German model.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import random
import re
import zlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ipa_tasks.demo_pipelines.language_routing.languages import LANGUAGES

COMPONENT_GROUPS: dict[str, str] = {
    "conf": "core",
    "postgres": "core",
    "admin": "admin",
    "admindocs": "admin",
    "auth": "auth",
    "gis": "gis",
    "humanize": "humanize",
    "contenttypes": "site",
    "flatpages": "site",
    "redirects": "site",
    "sessions": "site",
    "sites": "site",
}
"""Django component (``conf`` = ``django/conf/locale``, the rest ``django/contrib/<app>``) -> label. Small
apps are merged so that every label has enough strings in most languages."""

LABELS: tuple[str, ...] = tuple(sorted(set(COMPONENT_GROUPS.values())))

CATALOG_DIRECTORY: dict[str, str] = {language: language for language in LANGUAGES} | {"zh": "zh_Hans"}
"""Locale folder read for each language: one per language, because regional variants (``de_CH``,
``es_AR``, ``zh_Hant``) mostly repeat the main catalogue and would put near-duplicates into both splits."""

MIN_CHARACTERS = 20
"""Shorter strings ("Save", "Yes") carry almost no evidence of either language or component."""

SEED = 0
TEST_TENTHS = 3
"""Sources whose crc32 modulo 10 is below this go to the test split (about 30 %)."""

_PLACEHOLDER = re.compile(
    r"%\([^)]*\)[#0\- +]*\d*(?:\.\d+)?[a-zA-Z]"  # %(name)s
    r"|%[#0\- +]*\d*(?:\.\d+)?[sdifr%]"  # %s, %d, %%
    r"|\{[^{}]*\}"  # {name}
    r"|<[^>]+>"  # HTML tags
)


@dataclass(frozen=True, order=True)
class Sample:
    language: str
    text: str
    label: str
    source: str
    """The English ``msgid``; decides the split."""


@dataclass(frozen=True)
class DataSet:
    train: tuple[Sample, ...]
    test: tuple[Sample, ...]

    def languages(self) -> list[str]:
        return sorted({s.language for s in self.train})


def django_root() -> Path:
    import django

    return Path(django.__file__).parent


def catalog_path(root: Path, component: str, language: str) -> Path:
    base = root / "conf" / "locale" if component == "conf" else root / "contrib" / component / "locale"
    return base / CATALOG_DIRECTORY[language] / "LC_MESSAGES" / "django.po"


def clean_text(text: str) -> str:
    """Placeholders and markup are the same in every language and would only teach the identifiers and
    classifiers to look at them, so they are dropped and the whitespace collapsed."""
    return " ".join(_PLACEHOLDER.sub(" ", text).split())


def _first(value: str | Sequence[str]) -> str:
    """The singular of a plural entry: the plural forms repeat it with a different number."""
    return value if isinstance(value, str) else (value[0] if value else "")


def read_catalog(path: Path, language: str) -> Iterator[tuple[str, str]]:
    """(English source, cleaned translation) of every translated, non-fuzzy entry. English catalogues
    have empty translations, so their text is the source itself."""
    from babel.messages.pofile import read_po

    # Babel prints a warning for every plural entry with more forms than its catalogue declares; they are
    # harmless here (only the singular is used) and would bury the build log.
    quiet = io.StringIO()
    with path.open("rb") as handle, contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        catalog = read_po(handle)
    for message in catalog:
        source = _first(message.id)
        if not source or message.fuzzy:
            continue
        text = clean_text(source if language == "en" else _first(message.string))
        if len(text) >= MIN_CHARACTERS:
            yield source, text


def is_test_source(source: str) -> bool:
    return zlib.crc32(source.encode("utf-8")) % 10 < TEST_TENTHS


def load_samples(root: Path | None = None) -> list[Sample]:
    """Every usable sample, sorted, one per (language, text).

    A text that occurs in several components with different labels (24 of 11.6k) is dropped: no model
    could be right on it. A text that repeats with one label is kept once, under its smallest source, so
    that the split puts it on one side only.
    """
    root = root or django_root()
    found: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for component, label in COMPONENT_GROUPS.items():
        for language in LANGUAGES:
            path = catalog_path(root, component, language)
            if path.exists():
                for source, text in read_catalog(path, language):
                    found[(language, text)].append((label, source))
    samples = []
    for (language, text), occurrences in found.items():
        labels = {label for label, _ in occurrences}
        if len(labels) == 1:
            samples.append(Sample(language, text, labels.pop(), min(source for _, source in occurrences)))
    return sorted(samples)


def split(samples: Sequence[Sample]) -> DataSet:
    """Train sorted; test in a fixed shuffled order.

    The profiling job times batches of consecutive held-out inputs, and in sorted order a batch of 32 would
    hold one or two languages, so the classifiers' one-call-per-language batching would look far cheaper
    than on a real stream. Shuffled, a batch mixes languages as multilingual traffic does.
    """
    test = [s for s in samples if is_test_source(s.source)]
    random.Random(SEED).shuffle(test)
    return DataSet(train=tuple(s for s in samples if not is_test_source(s.source)), test=tuple(test))


@functools.cache
def load_dataset() -> DataSet:
    """The data set of the installed Django, parsed once per process (about 1.5 s)."""
    return split(load_samples())


HELD_OUT_FILE = "held_out.json"


def write_held_out(directory: Path, samples: Sequence[Sample]) -> Path:
    """The test split next to a built variant, so that loading it for profiling parses no catalogue."""
    path = directory / HELD_OUT_FILE
    rows = [[s.language, s.text, s.label, s.source] for s in samples]
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return path


def read_held_out(directory: Path) -> tuple[Sample, ...]:
    rows = json.loads((directory / HELD_OUT_FILE).read_text(encoding="utf-8"))
    return tuple(Sample(*row) for row in rows)
