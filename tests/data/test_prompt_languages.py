"""The prompt-language registry: what a registered language must give, and the errors that list
what is registered. (A language registered and used end to end: tests/test_extending_from_outside.py.)"""
import copy

import pytest

from surveylm_jax.data import DataError, prompt_layouts, survey_prompts
from surveylm_jax.data.codebook import load_codebook

CODEBOOK = """name: tiny
source: {csv: nowhere.csv}
respondent_id: id
language: LANG
demographics:
  - {column: sex, label: sex, values: {1: male, 2: female}}
questions:
  - {column: q1, text: 'Trust neighbours?', options: [{code: 1, label: 'yes'}, {code: 2, label: 'no'}]}
outputs: [task4]
"""


def _english(kind):
  return copy.deepcopy(prompt_layouts.KINDS[kind]["en"])


def test_built_in_languages_are_registered_with_every_kind():
  assert set(prompt_layouts.LANGUAGES) >= {"en", "zh"}
  for code in ("en", "zh"):
    assert set(prompt_layouts.LANGUAGES[code]) == set(prompt_layouts.KINDS)
  assert prompt_layouts.detect_language("...\n问卷问题：\n...", "survey_response") == "zh"
  assert prompt_layouts.detect_language("...\nSurvey question:\n...", "survey_response") == "en"
  assert prompt_layouts.detect_language("nothing here", "survey_response") is None


@pytest.mark.parametrize("layouts, message", [
    ({"survey_response": {"intro": "x"}}, r"survey_response: missing keys \['background'"),
    ({"survey_reply": {}}, r"kinds \['survey_reply'\]; valid kinds: \['survey_response', "),
    ({}, r"kinds \(none\)"),
    ({"stance": dict(_english("stance"), ask="Judge the stance.")}, r"stance\.ask needs the placeholder \{topic\}"),
    ({"stance": dict(_english("stance"), labels={"positive": "pro", "negative": "con"})},
     r"stance\.labels must name each of \['positive', 'neutral', 'negative'\]"),
    ({"stance": dict(_english("stance"), labels={"positive": "negative", "neutral": "n", "negative": "x"})},
     r"stance labels \{'negative': 'negative'\} already name other stances"),
    ({"survey_response": dict(_english("survey_response"), question="")}, r"survey_response\.question is empty"),
])
def test_a_bad_language_is_refused_and_nothing_is_registered(layouts, message):
  before = copy.deepcopy((prompt_layouts.LANGUAGES, prompt_layouts.STANCE_WORDS))
  with pytest.raises(ValueError, match=message):
    prompt_layouts.register_language("xx_bad", layouts)
  assert (prompt_layouts.LANGUAGES, prompt_layouts.STANCE_WORDS) == before


def test_built_in_languages_cannot_be_registered_again():
  with pytest.raises(ValueError, match="'en' is already registered"):
    prompt_layouts.register_language("en", {"survey_response": _english("survey_response")})


def test_unknown_language_errors_list_the_registered_ones(tmp_path):
  path = tmp_path / "codebook.yaml"
  path.write_text(CODEBOOK.replace("LANG", "fr"), encoding="utf-8")
  with pytest.raises(DataError, match=r"'fr' is not a registered prompt language; registered: "
                                      r"\['en', 'zh'.*register_language"):
    load_codebook(path)
  with pytest.raises(ValueError, match=r"unknown prompt language 'fr'; registered: \['en', 'zh'"):
    survey_prompts.survey_response("fr", 2018, [("sex", "male")], "Trust?", ["yes", "no"])


def test_a_year_sentence_is_dropped_in_any_language_when_no_year_is_known():
  text = survey_prompts._intro("L'enquête date de {year}. Répondez à la question.", None)
  assert text == "Répondez à la question."
  assert survey_prompts._intro("L'enquête date de {year}. Répondez.", 2020) == "L'enquête date de 2020. Répondez."
  english = survey_prompts.survey_response("en", None, [("age", "45")], "Trust?", ["yes", "no"])
  assert english.startswith("You need to simulate a real survey respondent") and "your age: 45" in english
