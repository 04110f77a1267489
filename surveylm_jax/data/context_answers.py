"""Context answers for task-4 prompts (codebook `split.context_answers: N`).

Each individual survey record shows N of the same row's other answers, drawn only from training
questions (never a held-out question, never the record's own target), so a prompt cannot carry
what the test side is meant to measure. Each row gets one seeded order of its training-question
answers (from the person and row ids: the same codebook gives the same context whatever order
records are built in); a record shows the first N of that order other than its own target, in
questionnaire order. So most of a respondent's records show the same N answers, and the scoring
read-out runs that shared prompt prefix (background + context) once for all of them; a record
whose target is among them shows the next answer in the order instead.
"""
from __future__ import annotations

import collections
import zlib

import numpy as np

_CONTEXT_STREAM = 4   # beside the split's seed streams (splits.py)


def _stable(text: str) -> int:
  return zlib.crc32(text.encode("utf-8"))


class ContextPicker:
  """context(respondent_id, question_index) -> [{question_id, question, answer}], at most N."""

  def __init__(self, codebook, respondents, cells, wanted: int):
    self.wanted, self.seed = wanted, codebook.split.seed
    # Full source rows, not a side's view: a row's training-question answers are prompt inputs
    # whatever side their own cells went to (a test person's excluded training answers included).
    self.rows = {r.respondent_id: r for r in respondents}
    held = set(cells.held_out)
    self.training = [(i, q) for i, q in enumerate(codebook.questions) if q.column not in held]
    self.counts = collections.Counter()

  def _order(self, row) -> list:
    """The row's answered training questions [(index, question)] in its seeded order."""
    answered = [(i, q) for i, q in self.training if row.answers.get(q.column) is not None]
    rng = np.random.default_rng([self.seed, _CONTEXT_STREAM, _stable(row.person_id),
                                 _stable(row.respondent_id)])
    return [answered[k] for k in rng.permutation(len(answered))]

  def __call__(self, respondent_id: str, target_index: int) -> list:
    row = self.rows[respondent_id]
    shown = [(i, q) for i, q in self._order(row) if i != target_index][:self.wanted]
    if len(shown) < self.wanted:
      self.counts["records_with_fewer_context_answers"] += 1
    return [{"question_id": q.column, "question": q.text, "answer": q.options[row.answers[q.column]][1]}
            for _, q in sorted(shown, key=lambda item: item[0])]
