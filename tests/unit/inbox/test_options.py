"""Options from folders: a folder's name parsed into target languages, or refused with the spelling meant."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ugcwatchd import languages
from ugcwatchd.inbox.group import dublab_targets
from ugcwatchd.inbox.options import BadFolderOptions, Targets, folder_targets, rule_targets
from ugcwatchd.rules import DubLabAction


@pytest.fixture(autouse=True)
def built_in_languages() -> Iterator[None]:
    languages.use(None)
    yield
    languages.use(None)


def action(**fields: Any) -> DubLabAction:
    return DubLabAction.model_validate({"to": ["de", "es"], "from": "en", **fields})


@pytest.mark.parametrize(
    ("folder", "expected"),
    [
        ("de+es", (("de", False), ("es", False))),
        ("fr@studio", (("fr", True),)),
        ("de+es@studio", (("de", True), ("es", True))),
        ("it+pt+ja", (("it", False), ("pt", False), ("ja", False))),
        ("DE+Es@Studio", (("de", True), ("es", True))),  # a share may change the letter case
    ],
)
def test_folder_targets_valid_name_sets_languages_and_studio(folder: str, expected: tuple[tuple[str, bool]]) -> None:
    assert folder_targets(folder, action()).languages == expected


def test_folder_targets_override_the_rules_to_and_studio_quality() -> None:
    rule = action(studio_quality=True)
    assert folder_targets("fr", rule) == Targets((("fr", False),))  # no @studio: standard, whatever the rule says
    assert rule_targets(rule) == Targets((("de", True), ("es", True)))


@pytest.mark.parametrize(
    ("folder", "message"),
    [
        ("xx", "folder 'xx': 'xx' is not a supported language (did you mean 'xh'?)"),
        ("de+xx", "folder 'de+xx': 'xx' is not a supported language (did you mean 'de+xh'?)"),
        ("german", "folder 'german': 'german' is not a supported language (did you mean 'de'?)"),
        ("deu@studio", "folder 'deu@studio': 'deu' is not a supported language (did you mean 'de@studio'?)"),
        ("de+de", "folder 'de+de': 'de' is named twice (did you mean 'de'?)"),
        ("en+fr", "folder 'en+fr': 'en' is the rule's source language (from: en) (did you mean 'fr'?)"),
        ("de@studoi", "'@studoi' is not an option: the only one is '@studio' (did you mean 'de@studio'?)"),
        ("de@fast", "'@fast' is not an option: the only one is '@studio' (did you mean 'de'?)"),
        ("de++es", "folder 'de++es': an empty language name (did you mean 'de+es'?)"),
        ("@studio", "folder '@studio': an empty language name (a folder is named like 'de+es' or 'fr@studio')"),
    ],
)
def test_folder_targets_invalid_name_is_refused_naming_the_closest_spelling(folder: str, message: str) -> None:
    with pytest.raises(BadFolderOptions) as refused:
        folder_targets(folder, action())
    assert message in str(refused.value)


def test_folder_targets_language_of_the_live_list_is_accepted_without_an_upgrade() -> None:
    with pytest.raises(BadFolderOptions):
        folder_targets("qx+de", action())
    languages.use({*languages.BUILT_IN, "qx"})  # DubLab added a language; the daemon read its list
    assert folder_targets("qx+de", action()).codes == ("qx", "de")


def test_folder_targets_language_dropped_from_the_live_list_is_refused() -> None:
    languages.use(languages.BUILT_IN - {"fr"})
    with pytest.raises(BadFolderOptions, match="'fr' is not a supported language"):
        folder_targets("fr", action())


def test_rule_targets_per_language_studio_only_for_the_languages_listed() -> None:
    rule = action(studio_quality=["de"])
    assert rule_targets(rule).languages == (("de", True), ("es", False))
    assert rule_targets(rule).describe() == "de, es (studio: de)"
    assert rule_targets(action(studio_quality=True)).describe() == "de, es (studio)"
    assert rule_targets(action()).describe() == "de, es"


def test_dublab_targets_only_first_level_folders_of_an_options_rule_count() -> None:
    rule = action(options_from_folders=True, studio_quality=["es"])
    assert dublab_targets(rule, "clip.mp4") == rule_targets(rule)  # directly in the inbox: the rule's own
    assert dublab_targets(rule, "fr@studio/clip.mp4").languages == (("fr", True),)
    assert dublab_targets(rule, "fr/sub/clip.mp4").codes == ("fr",)  # recursive: the first level decides
    plain = action(studio_quality=["es"])
    assert dublab_targets(plain, "xx/clip.mp4") == rule_targets(plain)  # without options_from_folders: a folder


def test_languages_closest_prefers_name_case_and_three_letter_codes() -> None:
    assert languages.closest("Spanish") == "es"
    assert languages.closest("DE") == "de"
    assert languages.closest("fra") == "fr"
    assert languages.closest("qqqqqq") is None
