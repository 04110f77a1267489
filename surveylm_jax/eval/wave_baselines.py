"""Baselines for a later survey wave, trained on earlier waves (the records' `year` metadata):

  persistence  each question's answer shares in its last training wave (the largest year among
               its training records; all its records when none has a year), add-0.5 smoothed;
  logreg_year  per question, logistic regression on one-hot demographics plus the survey year
               (numeric, standardized per question), so a trend over waves extrapolates.

Answers are matched by identity (option text), as `marginal` and `logreg` do.
"""
from __future__ import annotations

import collections
from typing import Callable

import numpy as np

from surveylm_jax.eval import baselines
from surveylm_jax.eval.baselines import logistic_regression, profile_features, question_key, register_baseline

YEAR_FEATURE = "\x00survey year (standardized)"   # cannot clash with a profile field's name


def record_year(record) -> float | None:
  year = record.extra.get("year")
  try:
    return float(year)
  except (TypeError, ValueError):   # missing, or a range such as "2016-2018"
    return None


@register_baseline("persistence")
def fit_persistence(train_records, smoothing: float = 0.5) -> Callable:
  by_question = collections.defaultdict(list)
  for r in train_records:
    by_question[question_key(r)].append(r)
  last_wave = []
  for records in by_question.values():
    years = [y for y in map(record_year, records) if y is not None]
    last = max(years) if years else None
    last_wave.extend(r for r in records if last is None or record_year(r) == last)
  counts = baselines.AnswerCounts(last_wave, smoothing, name="persistence")
  return counts.shares


@register_baseline("logreg_year")
def fit_logreg_year(train_records, c: float = 1.0, max_iter: int = 300) -> Callable:
  years = collections.defaultdict(list)
  for r in train_records:
    y = record_year(r)
    if y is not None:
      years[question_key(r)].append(y)
  # Standardized per question so one C regularizes the year like a one-hot feature; a question
  # asked in one wave only (or with no year) gets a constant 0 and falls back to `logreg`.
  scale = {q: (float(np.mean(v)), float(np.std(v)) or 1.0) for q, v in years.items()}

  def features(record) -> dict:
    q, y = question_key(record), record_year(record)
    z = 0.0 if y is None or q not in scale else (y - scale[q][0]) / scale[q][1]
    return {**profile_features(record), YEAR_FEATURE: z}

  return baselines.QuestionClassifiers(train_records, features, logistic_regression(c, max_iter),
                                       "logreg_year")
