"""Predictions and targets in each question's canonical option order.

Read-outs and baselines give distributions over a record's *listed* options. Before any metric
that depends on order (W1, representativeness, RPS) or that averages records by position (group
aggregation, fairness W1), they are permuted into the question's canonical order from the
`QuestionCatalog`; nominal questions get a fixed order too (so records still line up) and a flag
that keeps W1 and RPS off them.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from surveylm_jax.data.question_catalog import QuestionCatalog, QuestionOrder


@dataclasses.dataclass(frozen=True)
class CanonicalView:
  """One record with options seen in canonical order."""
  order: QuestionOrder
  perm: np.ndarray           # perm[j] = listed index of canonical option j

  @property
  def options(self) -> list[str]:
    return list(self.order.options)

  @property
  def ordinal(self) -> bool:
    return self.order.ordinal

  def probs(self, p):
    """A distribution over the listed options, reordered canonically (None stays None)."""
    return None if p is None else np.asarray(p, np.float64)[self.perm]

  def index(self, listed_index: int) -> int:
    return int(np.flatnonzero(self.perm == listed_index)[0])


def view(catalog: QuestionCatalog, record) -> CanonicalView:
  order = catalog.resolve_record(record)
  return CanonicalView(order, order.permutation(record.option_texts()))


def views(catalog: QuestionCatalog, records) -> list[CanonicalView]:
  return [view(catalog, r) for r in records]


def reorder_all(vs, probs):
  """Each record's distribution (or None) in its canonical order."""
  return [v.probs(p) for v, p in zip(vs, probs)]
