"""Options from folders (DubLab, ``options_from_folders: true``): a first-level subfolder of the inbox
named ``LANG[+LANG…][@studio]`` (``de+es``, ``fr@studio``) sets the target languages of the files in it,
and ``@studio`` makes all of them studio quality, instead of the rule's ``to`` and ``studio_quality``.

A name that is not valid options is refused with the closest valid spelling, so the person who made the
folder can rename it: ``folder 'xx': 'xx' is not a supported language (did you mean 'xh'?)``.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection
from dataclasses import dataclass

from .. import languages
from ..rules import DubLabAction

STUDIO = "studio"
SEPARATOR = "+"


class BadFolderOptions(ValueError):
    """A folder name that is not valid options; the message says why, and the spelling that would be."""


@dataclass(frozen=True)
class Targets:
    """What a file is dubbed into: each target language, with whether it is made in studio quality."""

    languages: tuple[tuple[str, bool], ...]

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(code for code, _ in self.languages)

    def describe(self) -> str:
        """``de, es (studio: de)``, ``de, es (studio)`` or ``de, es``."""
        studio = [code for code, yes in self.languages if yes]
        text = ", ".join(self.codes)
        if studio and len(studio) == len(self.languages):
            return f"{text} (studio)"
        return f"{text} (studio: {', '.join(studio)})" if studio else text


def rule_targets(action: DubLabAction) -> Targets:
    """The rule's own targets: ``to``, each in studio quality as ``studio_quality`` says."""
    return Targets(tuple((code, action.studio_for(code)) for code in action.to))


def folder_targets(folder: str, action: DubLabAction, known: Collection[str] | None = None) -> Targets:
    """The targets a subfolder named ``folder`` sets; raises :class:`BadFolderOptions`.

    ``known`` is the language list to check against (default: the one in use, see ``ugcwatchd.languages``).
    """
    codes = languages.known() if known is None else known
    named, at, suffix = folder.partition("@")
    studio = bool(at)
    fixed_suffix = f"@{STUDIO}" if at else ""
    problem: str | None = None
    if at and suffix.lower() != STUDIO:
        misspelt = difflib.get_close_matches(suffix.lower(), [STUDIO], n=1, cutoff=0.5)
        problem = f"'@{suffix}' is not an option: the only one is '@{STUDIO}'"
        fixed_suffix = f"@{STUDIO}" if misspelt else ""
    parts = named.split(SEPARATOR)
    fixed: list[str] = []
    chosen: list[str] = []
    for part in parts:
        code = _exact(part, codes)
        if not part.strip():
            problem = problem or "an empty language name"
            continue
        if code is None:
            close = languages.closest(part, codes)
            problem = problem or f"{part!r} is not a supported language"
            if close is not None and close not in fixed and close != action.from_:
                fixed.append(close)
            continue
        if code == action.from_:
            problem = problem or f"{code!r} is the rule's source language (from: {action.from_})"
            continue
        if code in chosen:
            problem = problem or f"{code!r} is named twice"
            continue
        chosen.append(code)
        fixed.append(code)
    if problem is None:
        return Targets(tuple((code, studio) for code in chosen))
    raise BadFolderOptions(f"folder {folder!r}: {problem}{_hint(folder, fixed, fixed_suffix)}")


def _exact(part: str, codes: Collection[str]) -> str | None:
    """The code ``part`` names, in any letter case (a share may change the case of a folder name)."""
    if part in codes:
        return part
    by_case = {c.lower(): c for c in codes}
    return by_case.get(part.lower())


def _hint(folder: str, fixed: list[str], suffix: str) -> str:
    """`` (did you mean 'de+es@studio'?)``: the folder's name with every mistake mended, when one is left."""
    if not fixed:
        return f" (a folder is named like 'de+es' or 'fr@{STUDIO}')"
    spelling = SEPARATOR.join(dict.fromkeys(fixed)) + suffix
    return f" (did you mean {spelling!r}?)" if spelling != folder else ""
