"""Typed AlignSurvey records: what later stages (templates, scoring, metrics, fairness) use.

Every record keeps its Alpaca fields (`instruction`, `input`, `output`), where it came from, the
other fields of the raw record (`extra`, e.g. the converter's metadata) and `cut_spans`: character
spans of the prompt that truncation may shorten (background, earlier dialogue), in the order they
should be cut. Question and options are never inside a cut span.

An answer is its option *text*, not its letter: CHIP shuffles A/B/C per item, so "A. 一般" in one
record and "C. 一般" in another are the same answer. `answer_key` gives the comparable form.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from surveylm_jax.data.answers import answer_key

STANCES = ("positive", "neutral", "negative")  # ordinal order used for group distributions


@dataclasses.dataclass(frozen=True)
class Option:
  letter: str
  text: str

  def render(self) -> str:
    return f"{self.letter}. {self.text}"


@dataclasses.dataclass(frozen=True)
class RecordSource:
  path: str
  index: int
  line: int | None = None

  def __str__(self):
    return f"{self.path}: record {self.index}" + (f" (line {self.line})" if self.line else "")


@dataclasses.dataclass(frozen=True)
class AlignSurveyRecord:
  """Fields every record has. `task` is e.g. 'task4'; `level` is 'individual', 'group' or 'corpus'."""
  task: str
  level: str
  instruction: str
  input: str
  output: str
  source: RecordSource
  extra: Mapping = dataclasses.field(default_factory=dict)
  cut_spans: tuple = ()

  @property
  def prompt(self) -> str:
    """The user turn: the instruction, then the input when it carries text."""
    return self.instruction + ("\n\n" + self.input if self.input.strip() else "")

  @property
  def target(self) -> str:
    """The assistant turn to train on."""
    return self.output

  def to_alpaca(self) -> dict:
    return {"instruction": self.instruction, "input": self.input, "output": self.output, **self.extra}


@dataclasses.dataclass(frozen=True)
class DialogueRecord(AlignSurveyRecord):
  """foundation_qual: earlier interview turns (speaker, text) and the next response."""
  turns: tuple = ()


@dataclasses.dataclass(frozen=True)
class OptionsMixin:
  """Shared by records with lettered options; `options_span` locates their lines in `instruction`."""

  def option_texts(self) -> list[str]:
    return [o.text for o in self.options]

  def index_of_answer(self, text: str) -> int | None:
    key = answer_key(text)
    for i, option in enumerate(self.options):
      if answer_key(option.text) == key:
        return i
    return None


@dataclasses.dataclass(frozen=True)
class SurveyResponseRecord(OptionsMixin, AlignSurveyRecord):
  """task4 individual and foundation_quan: one respondent answering one lettered question.

  `output_style` says how the released output names the answer: 'letter_text' ("C. middle
  class"), 'text' ("Average") or 'letter' ("C"); option shuffling keeps that style.
  """
  respondent_id: str | None = None
  background: Mapping = dataclasses.field(default_factory=dict)
  question: str = ""
  options: tuple = ()
  target_index: int = -1
  options_span: tuple = (0, 0)
  output_style: str = "letter_text"

  @property
  def target_option(self) -> Option:
    return self.options[self.target_index]

  @property
  def answer(self) -> str:
    return self.target_option.text

  @property
  def answer_key(self) -> str:
    return answer_key(self.answer)


@dataclasses.dataclass(frozen=True)
class RoleInferenceRecord(AlignSurveyRecord):
  """task1: infer `field` from an interview; `allowed_values` may be empty for free-form fields."""
  respondent_id: str | None = None
  dialogue: tuple = ()
  field: str = ""
  allowed_values: tuple = ()
  target_values: tuple = ()


@dataclasses.dataclass(frozen=True)
class InterviewRecord(AlignSurveyRecord):
  """task2: background, earlier (question, answer) turns, the current question and the answer."""
  respondent_id: str | None = None
  background: Mapping = dataclasses.field(default_factory=dict)
  history: tuple = ()
  question: str = ""
  answer: str = ""


@dataclasses.dataclass(frozen=True)
class StanceRecord(AlignSurveyRecord):
  """task3 individual: `stance` is one of STANCES; `stance_label` is the released word (积极, ...)."""
  respondent_id: str | None = None
  background: Mapping = dataclasses.field(default_factory=dict)
  topic: str = ""
  stance: str = ""
  stance_label: str = ""
  reason: str = ""


@dataclasses.dataclass(frozen=True)
class GroupDistributionRecord(OptionsMixin, AlignSurveyRecord):
  """task3/task4 group level: a demographic group's answer shares in the listed option order."""
  group: Mapping = dataclasses.field(default_factory=dict)
  question: str = ""
  options: tuple = ()
  distribution: tuple = ()
  n: int | None = None
  options_span: tuple = (0, 0)
