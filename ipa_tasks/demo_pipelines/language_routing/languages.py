"""The languages of the data set and one spelling for every language code the identifiers emit."""

from __future__ import annotations

_CODES = (
    "af ar bg bn ca cs cy da de el en es et fa fi fr he hi hr hu id it ja",
    "ko lt lv mk mr nl pl pt ro ru sk sl sq sv sw ta te th tr uk ur vi zh",
)
LANGUAGES: tuple[str, ...] = tuple(code for line in _CODES for code in line.split())
"""ISO 639-1 codes of the 46 languages that Django translates and every identifier we tried supports
(``reference/models.md`` section 3), so no language is lost to an identifier that cannot name it."""

UNKNOWN = "un"
"""What an identifier says when it has no answer (cld2's own code for it)."""

_RETIRED_CODES = {"iw": "he", "in": "id", "ji": "yi", "jw": "jv", "mo": "ro"}
"""ISO 639-1 codes withdrawn in 1989 that cld2 and older tools still emit."""


def normalise_language_code(code: str | None) -> str:
    """``zh-Hant``, ``pt_BR``, ``IW`` and ``und`` become ``zh``, ``pt``, ``he`` and ``un``.

    Region and script subtags are dropped because the data set has one catalogue per language, so a
    Brazilian-Portuguese guess must route to the Portuguese model.
    """
    if not code:
        return UNKNOWN
    base = code.strip().lower().replace("_", "-").split("-", 1)[0]
    if base in {"", "und", "xx", "xxx", "zzz"}:
        return UNKNOWN
    return _RETIRED_CODES.get(base, base)
