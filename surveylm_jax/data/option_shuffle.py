"""Option-order shuffling: a seeded training augmentation, and permuted copies for bias tests.

Positions keep their letters (A, B, C ...); the option texts move. The target follows its text, so
the answer identity (the text) never changes, only the letter the model must write. Group records
have their distribution permuted the same way and their output re-rendered as share lines.
"""
from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from surveylm_jax.data.records import GroupDistributionRecord, Option, SurveyResponseRecord

SHUFFLABLE = (SurveyResponseRecord, GroupDistributionRecord)


def format_share_lines(options, distribution) -> str:
  """'A. too little: 45.3%' lines; the shares are rounded to 0.1% so they sum to 100.0%."""
  tenths = largest_remainder_round(distribution, 1000)
  return "\n".join(f"{o.render()}: {t / 10:.1f}%" for o, t in zip(options, tenths))


def largest_remainder_round(shares, total: int) -> list[int]:
  """Integers proportional to `shares` that sum exactly to `total` (Hamilton's method)."""
  raw = np.asarray(shares, dtype=np.float64) * total / max(float(np.sum(shares)), 1e-12)
  floors = np.floor(raw).astype(int)
  order = np.argsort(-(raw - floors), kind="stable")
  floors[order[:total - int(floors.sum())]] += 1
  return floors.tolist()


def reorder_options(record, order):
  """The record with its options shown in `order` (new position i shows old option order[i])."""
  if not isinstance(record, SHUFFLABLE):
    raise TypeError(f"{type(record).__name__} has no lettered options to reorder")
  k = len(record.options)
  order = [int(i) for i in order]
  if sorted(order) != list(range(k)):
    raise ValueError(f"{order} is not a permutation of {k} options")
  letters = [o.letter for o in record.options]
  options = tuple(Option(letters[new], record.options[old].text) for new, old in enumerate(order))
  block = "\n".join(o.render() for o in options)
  start, end = record.options_span
  instruction = record.instruction[:start] + block + record.instruction[end:]
  extra = dict(record.extra, option_order=[record.options[i].text for i in order])
  changes = dict(instruction=instruction, options=options, options_span=(start, start + len(block)),
                 extra=extra)
  if isinstance(record, SurveyResponseRecord):
    target = order.index(record.target_index)
    chosen = options[target]
    output = {"letter_text": chosen.render(), "letter": chosen.letter, "text": chosen.text}[record.output_style]
    changes.update(target_index=target, output=output)
  else:
    distribution = tuple(record.distribution[i] for i in order)
    changes.update(distribution=distribution, output=format_share_lines(options, distribution))
    if "distribution" in extra:
      extra["distribution"] = list(distribution)
  return dataclasses.replace(record, **changes)


def shuffle_options(record, rng: np.random.Generator):
  """A random option order (training augmentation); records without options pass unchanged."""
  if not isinstance(record, SHUFFLABLE):
    return record
  return reorder_options(record, rng.permutation(len(record.options)))


def permuted_copies(record, mode: str = "cyclic") -> list:
  """Copies of an evaluation item under every cyclic shift ('cyclic', K copies) or every order
  ('all', K! copies), the listed order first, so position bias can be measured per item."""
  k = len(record.options)
  if mode == "cyclic":
    orders = [[(s + i) % k for i in range(k)] for s in range(k)]
  elif mode == "all":
    orders = [list(p) for p in itertools.permutations(range(k))]
  else:
    raise ValueError(f"unknown permutation mode {mode!r}; valid: ['all', 'cyclic']")
  return [reorder_options(record, order) for order in orders]
