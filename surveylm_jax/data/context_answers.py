"""Context answers for task-4 prompts (codebook `split.context_answers: N`).

Each individual survey record shows N of the same row's other answers, drawn only from training
questions (never a held-out question, never the record's own target), so a prompt cannot carry
what the test side is meant to measure. Draws are seeded per person, row and question: the same
codebook gives the same context whatever order records are built in. The chosen answers are shown
in questionnaire order.
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

  def __call__(self, respondent_id: str, target_index: int) -> list:
    row = self.rows[respondent_id]
    pool = [(i, q) for i, q in self.training
            if i != target_index and row.answers.get(q.column) is not None]
    if len(pool) < self.wanted:
      self.counts["records_with_fewer_context_answers"] += 1
    rng = np.random.default_rng([self.seed, _CONTEXT_STREAM, _stable(row.person_id),
                                 _stable(row.respondent_id), target_index])
    picked = sorted(rng.permutation(len(pool))[:self.wanted]) if pool else []
    return [{"question_id": pool[k][1].column, "question": pool[k][1].text,
             "answer": pool[k][1].options[row.answers[pool[k][1].column]][1]} for k in picked]
