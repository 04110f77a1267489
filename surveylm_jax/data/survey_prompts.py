"""Prompt text for converted survey records, written with the readers' own layout markers, in
any registered prompt language (`prompt_layouts.register_language`)."""
from __future__ import annotations

import json
import re
import string
from collections.abc import Sequence

from surveylm_jax.data import prompt_layouts as layouts
from surveylm_jax.data.option_shuffle import format_share_lines
from surveylm_jax.data.records import Option

LETTERS = string.ascii_uppercase


def lettered(labels) -> tuple:
  if len(labels) > len(LETTERS):
    raise ValueError(f"{len(labels)} options; at most {len(LETTERS)} can be lettered")
  return tuple(Option(LETTERS[i], text) for i, text in enumerate(labels))


_YEAR_SENTENCE = re.compile(r"[^.。!?！？]*\{year\}[^.。!?！？]*[.。!?！？]?\s*")


def _intro(template: str, year=None) -> str:
  if year in (None, ""):  # no year known: drop the sentence that would state it
    template = _YEAR_SENTENCE.sub("", template)
  return template.format(year=year)


def key_value_lines(pairs, prefix: str = "") -> str:
  return "\n".join(f"{prefix}{k}: {v}" for k, v in pairs)


def context_block(lang: str, context) -> str:
  """The "answers in context" block of a survey_response prompt: heading, then a question line and
  an answer line per (question, answer) pair. Texts must be one line each: the reader takes one
  line per text, which is what keeps option-like or question-like texts from being misread."""
  lay = layouts.layout("survey_response", lang)
  missing = [k for k in layouts.OPTIONAL_KEYS["survey_response"] if k not in lay]
  if missing:
    raise ValueError(f"prompt language {lang!r}: the survey_response layout has no {missing[0]!r} key, "
                     f"needed to show answers in context (add {missing} as in "
                     "prompt_layouts.SURVEY_RESPONSE['en'])")
  lines = [lay["context"]]
  for i, pair in enumerate(context):
    if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
      raise ValueError(f"context[{i}]: expected a (question, answer) pair, got {pair!r}")
    for name, tag, text in (("question", lay["context_question"], pair[0]),
                            ("answer", lay["context_answer"], pair[1])):
      if not isinstance(text, str) or not text.strip():
        raise ValueError(f"context[{i}].{name}: expected non-empty text, got {text!r}")
      if "\n" in text or "\r" in text:
        raise ValueError(f"context[{i}].{name}: {text[:60]!r} spans several lines; context texts "
                         "must be one line each")
      lines.append(f"{tag}{text.strip()}")
  return "\n".join(lines)


def survey_response(lang: str, year, background, question: str, labels, context=()) -> str:
  """task 4 individual / foundation_quan prompt; `background` is [(label, text)].

  `context` is [(question, answer)]: the respondent's own answers to other questions of the same
  survey, shown between background and question (imputation). With none, the prompt is exactly
  the one written before context existed, so converted files do not change.
  """
  lay = layouts.layout("survey_response", lang)
  prefix = lay["background_prefix"]
  options = "\n".join(o.render() for o in lettered(labels))
  options_block = options if lay["options"] is None else f"{lay['options']}\n{options}"
  context = () if context is None else tuple(context)
  middle = f"{context_block(lang, context)}\n\n" if context else ""
  return (f"{_intro(lay['intro'], year=year)}\n{lay['background']}\n{key_value_lines(background, prefix)}\n\n"
          f"{middle}{lay['question']}\n{question}\n{options_block}\n\n{lay['ask']}")


def group_distribution(lang: str, year, group, question: str, labels) -> str:
  lay = layouts.layout("group_distribution", lang)
  options = "\n".join(o.render() for o in lettered(labels))
  options_block = options if lay["options"] is None else f"{lay['options']}\n{options}"
  return (f"{_intro(lay['intro'], year=year)}\n{lay['group']}\n{key_value_lines(group)}\n\n"
          f"{lay['question']}\n{question}\n{options_block}\n\n{lay['ask']}")


def share_lines(labels, distribution) -> str:
  return format_share_lines(lettered(labels), distribution)


def stance(lang: str, background, topic: str) -> str:
  lay = layouts.layout("stance", lang)
  return (f"{lay['intro']}\n{lay['background']}\n{key_value_lines(background)}\n\n"
          f"{lay['ask'].format(topic=topic)}\n{lay['format']}")


def stance_output(lang: str, stance_name: str, reason: str) -> str:
  return json.dumps({"predict": layouts.layout("stance", lang)["labels"][stance_name], "reason": reason},
                    ensure_ascii=False)


def stance_reason(lang: str, question: str, answer: str) -> str:
  return layouts.layout("stance", lang)["reason"].format(question=question, answer=answer)


def stance_labels(lang: str) -> list[str]:
  from surveylm_jax.data.records import STANCES
  return [layouts.layout("stance", lang)["labels"][s] for s in STANCES]


def role_inference(lang: str, survey: str, turns, field: str, allowed) -> str:
  """task 1 prompt; `turns` is [(question, answer)] shown as an interview transcript."""
  lay = layouts.layout("role_inference", lang)
  dialogue = "\n".join(f"{lay['interviewer']}{q}\n{lay['respondent']}{a}" for q, a in turns)
  allowed_line = f"{lay['allowed']}{lay['sep'].join(allowed)}{lay['end']}"
  return (f"{lay['intro'].format(survey=survey)}\n\n{lay['dialogue']}\n{dialogue}\n\n"
          f"{lay['ask'].format(field=field)}\n{allowed_line}\n\n{lay['format']}")


def interview(lang: str, survey: str, background, history, question: str) -> str:
  lay = layouts.layout("interview", lang)
  sp = lay["tag_space"]
  turns = "\n".join(f"{lay['question_tag']}{sp}{q}\n{lay['answer_tag']}{sp}{a}" for q, a in history)
  return (f"{lay['intro'].format(survey=survey)}\n\n{lay['background']}\n{key_value_lines(background)}\n\n"
          f"{lay['history']}\n{turns}\n\n{lay['current']}\n{question}\n\n{lay['ask']}")


def stance_group_question(lang: str, topic: str) -> str:
  return layouts.layout("stance", lang)["group_question"].format(topic=topic)
