"""The doctor's and the pre-flight checks' words stay in step across languages: the same keys in every
language, and each translation uses exactly the {placeholders} of its English original."""
from __future__ import annotations

import string

import pytest

from utils.checks import messages as check_messages
from utils.doctor.messages import LANGS, MESSAGES, UI


def fields(template) -> set[str]:
    """The ``{field}`` names of a template (or of every template in a tuple / dict of them)."""
    if template is None:
        return set()
    if isinstance(template, (tuple, list)):
        return set().union(*(fields(t) for t in template))
    if isinstance(template, dict):
        return set().union(*(fields(t) for t in template.values()))
    return {f.split(".")[0].split("[")[0] for _, f, _, _ in string.Formatter().parse(template) if f}


def test_doctor_speaks_english_and_chinese():
    assert set(LANGS) == {"en", "zh"}


@pytest.mark.parametrize("fid", sorted(MESSAGES))
def test_every_finding_has_every_language_with_the_same_placeholders(fid):
    entry = MESSAGES[fid]
    assert set(entry) == set(LANGS), fid
    en = entry["en"]
    for lang in LANGS:
        pair = entry[lang]
        assert isinstance(pair, tuple) and len(pair) == 2 and all(pair), (fid, lang)
        for i, part in enumerate(("message", "remedy")):
            assert fields(pair[i]) == fields(en[i]), f"{fid} {lang} {part}: {fields(pair[i])} vs {fields(en[i])}"


def test_ui_words_have_the_same_keys_and_placeholders():
    assert set(UI) == set(LANGS)
    en = UI["en"]
    for lang in LANGS:
        assert set(UI[lang]) == set(en), lang
        for key, template in UI[lang].items():
            if isinstance(template, dict):
                assert set(template) == set(en[key]), (lang, key)
            assert fields(template) == fields(en[key]), f"UI[{lang}][{key}]"


def test_check_messages_translations_keep_the_english_keys_and_placeholders():
    """Other languages may be partial (missing keys fall back to English) but never add keys or change fields."""
    table = check_messages.MESSAGES
    assert "en" in table
    en = table["en"]
    for lang, words in table.items():
        assert set(words) <= set(en), (lang, sorted(set(words) - set(en)))
        for key, template in words.items():
            assert fields(template) == fields(en[key]), f"checks {lang} {key}"
    for key, template in en.items():  # the English table itself: runner words are str, findings (evidence, remedy)
        assert isinstance(template, str) if key.startswith("_") else (isinstance(template, tuple) and len(template) == 2)


def test_the_placeholder_comparison_catches_a_drift(monkeypatch):
    """A translation that lost a field is caught (the test above is not vacuous)."""
    broken = dict(MESSAGES["plateau"])
    broken["zh"] = (broken["zh"][0].replace("{best_step}", ""), broken["zh"][1])
    assert fields(broken["zh"][0]) != fields(broken["en"][0])
