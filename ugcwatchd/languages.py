"""DubLab's supported languages: the built-in list, transcribed from its published API document, and
the list in use.

The sandbox serves the built-in list at ``GET /api/langs``. The provider's own list is authoritative:
the daemon reads it at start and daily, ``check`` reads it too, and the ledger caches it (``facts``);
the commands put the cached list in use (:func:`use`) before they load the rules, so a language DubLab
added is accepted without an upgrade. Without one (``check --offline`` on a new host), the built-in
list is the fallback.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection

LANGUAGES: dict[str, str] = {
    "en": "English",
    "es": "Spanish",
    "fr": "French",
    "de": "German",
    "zh": "Chinese",
    "ja": "Japanese",
    "ru": "Russian",
    "pt": "Portuguese",
    "ar": "Arabic",
    "hi": "Hindi",
    "bn": "Bengali",
    "pa": "Punjabi",
    "vi": "Vietnamese",
    "ko": "Korean",
    "it": "Italian",
    "fa": "Persian",
    "tr": "Turkish",
    "nl": "Dutch",
    "he": "Hebrew",
    "id": "Indonesian",
    "pl": "Polish",
    "uk": "Ukrainian",
    "ro": "Romanian",
    "el": "Greek",
    "hu": "Hungarian",
    "th": "Thai",
    "sv": "Swedish",
    "cs": "Czech",
    "da": "Danish",
    "fi": "Finnish",
    "no": "Norwegian",
    "bg": "Bulgarian",
    "sk": "Slovak",
    "hr": "Croatian",
    "sr": "Serbian",
    "ms": "Malay",
    "ta": "Tamil",
    "ur": "Urdu",
    "te": "Telugu",
    "mr": "Marathi",
    "gu": "Gujarati",
    "ml": "Malayalam",
    "af": "Afrikaans",
    "eu": "Basque",
    "ca": "Catalan",
    "eo": "Esperanto",
    "gl": "Galician",
    "ka": "Georgian",
    "ht": "Haitian Creole",
    "is": "Icelandic",
    "ga": "Irish",
    "kn": "Kannada",
    "la": "Latin",
    "lv": "Latvian",
    "lt": "Lithuanian",
    "lb": "Luxembourgish",
    "mk": "Macedonian",
    "mt": "Maltese",
    "mn": "Mongolian",
    "ne": "Nepali",
    "se": "Northern Sami",
    "si": "Sinhala",
    "et": "Estonian",
    "tl": "Tagalog",
    "my": "Burmese",
    "kk": "Kazakh",
    "bs": "Bosnian",
    "sw": "Swahili",
    "am": "Amharic",
    "az": "Azerbaijani",
    "be": "Belarusian",
    "uz": "Uzbek",
    "km": "Khmer",
    "lo": "Lao",
    "sd": "Sindhi",
    "cy": "Welsh",
    "fy": "Frisian",
    "yo": "Yoruba",
    "ha": "Hausa",
    "ig": "Igbo",
    "zu": "Zulu",
    "xh": "Xhosa",
    "sn": "Shona",
    "fo": "Faroese",
    "ny": "Chichewa",
    "rw": "Kinyarwanda",
    "st": "Southern Sotho",
    "tn": "Tswana",
    "ts": "Tsonga",
    "ss": "Swati",
    "ve": "Venda",
    "tw": "Twi",
}

BUILT_IN: frozenset[str] = frozenset(LANGUAGES)
_in_use: frozenset[str] | None = None  # the provider's list, once read (or read from the cache)


def use(codes: Collection[str] | None) -> None:
    """Check targets against ``codes`` from now on (None or empty: the built-in list again)."""
    global _in_use
    _in_use = frozenset(codes) if codes else None


def known() -> frozenset[str]:
    """The language codes targets are checked against: the provider's list if known, else the built-in one."""
    return _in_use if _in_use is not None else BUILT_IN


def live() -> bool:
    """Whether :func:`known` is the provider's list (live or cached), not the built-in fallback."""
    return _in_use is not None


COUNTRY_CODES = {"jp": "ja", "cn": "zh", "kr": "ko", "gr": "el", "se": "sv", "dk": "da", "cz": "cs", "ua": "uk"}


def closest(code: str, among: Collection[str] | None = None) -> str | None:
    """The valid code ``code`` most likely means: by English name (``Spanish`` -> ``es``), else by spelling."""
    codes = known() if among is None else among
    lowered = code.lower()
    by_name = {name.lower(): c for c, name in LANGUAGES.items() if c in codes}
    if lowered in by_name:
        return by_name[lowered]
    by_case = {c.lower(): c for c in codes}
    if lowered in by_case:
        return by_case[lowered]
    if len(lowered) > 2 and lowered[:2] in by_case:  # a three-letter code: deu, fra, ita
        return by_case[lowered[:2]]
    # Country codes people write for languages: jp for Japanese, cn for Chinese, …
    if lowered in COUNTRY_CODES and COUNTRY_CODES[lowered] in codes and lowered not in by_case:
        return COUNTRY_CODES[lowered]
    if len(lowered) > 3:  # a misspelt name (germn, spansih) is nearer its name than any two-letter code
        named = difflib.get_close_matches(lowered, sorted(by_name), n=1, cutoff=0.7)
        if named:
            return by_name[named[0]]
    close = difflib.get_close_matches(lowered, sorted(codes), n=1, cutoff=0.5)
    return close[0] if close else None
