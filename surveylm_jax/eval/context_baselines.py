"""Baselines that see the respondent's answers to other questions (answers in context):

  logreg_context  per question, logistic regression on one-hot demographics plus one-hot
                  `question_id=answer` for each answer in the record's `context` metadata;
  gboost_context  the same features, scikit-learn HistGradientBoostingClassifier (interactions
                  between answers, at some cost per question).

`context` is the list of {question_id, question, answer} the survey converter writes when the
codebook sets `context_answers`, on training and test records alike. Records without it get
demographics only (so these reduce to `logreg`). An entry for the record's own question is
dropped: it would hand over the target.
"""
from __future__ import annotations

from typing import Callable

from surveylm_jax.data.answers import answer_key
from surveylm_jax.eval import baselines
from surveylm_jax.eval.baselines import logistic_regression, profile_features, register_baseline

CONTEXT_PREFIX = "\x00context "   # cannot clash with a profile field's name


def context_features(record) -> dict:
  """One-hot demographics plus {context question: answer identity}."""
  own = str(record.extra.get("question_id") or record.question)
  features = profile_features(record)
  for item in record.extra.get("context") or ():
    if not isinstance(item, dict) or item.get("answer") is None:
      continue
    qid = str(item.get("question_id") or item.get("question") or "")
    if qid and qid != own:
      features[CONTEXT_PREFIX + qid] = answer_key(str(item["answer"]))
  return features


@register_baseline("logreg_context")
def fit_logreg_context(train_records, c: float = 1.0, max_iter: int = 300) -> Callable:
  return baselines.QuestionClassifiers(train_records, context_features, logistic_regression(c, max_iter),
                                       "logreg_context")


@register_baseline("gboost_context")
def fit_gboost_context(train_records, max_iter: int = 100, seed: int = 0, floor: float = 1e-3) -> Callable:
  from sklearn.ensemble import HistGradientBoostingClassifier

  def make():
    # Fixed seed: the early-stopping split it draws on large questions is then reproducible.
    return HistGradientBoostingClassifier(max_iter=max_iter, random_state=seed)
  # Boosted trees fit a deterministic pattern to probability ~1: the floor keeps a miss's NLL finite.
  return baselines.QuestionClassifiers(train_records, context_features, make, "gboost_context",
                                       dense=True, floor=floor)
