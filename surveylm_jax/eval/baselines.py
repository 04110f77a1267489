"""Baselines that predict an answer distribution per record without a language model.

All fit on the training split's task-4 records and predict distributions over a test record's
options in listed order, so they go through the same metrics as the model:
  uniform   1/K for every option;
  majority  all mass on the training split's most common answer to the question;
  marginal  the training split's answer shares for the question;
  logreg    per question, a multinomial logistic regression on the respondent's demographics
            (one-hot profile fields), scikit-learn.
Questions are matched by `question_id` (converter metadata) or else by question text; answers by
answer identity (option text), so shuffled option orders in test records are handled.

A baseline is a registered `fit(train_records) -> predict(record) -> distribution over the
record's listed options`; name it in `config.eval.baselines`:

    from surveylm_jax.eval import baselines

    @baselines.register_baseline("first_option")
    def fit_first_option(train_records):
      return lambda record: np.eye(len(record.options))[0]

`answer_key(text)` (surveylm_jax.data) gives the answer identity to match training answers by.
"""
from __future__ import annotations

import collections
from typing import Callable, Sequence

import numpy as np

from surveylm_jax import registry
from surveylm_jax.cli import ConfigError
from surveylm_jax.data.answers import answer_key

BASELINES: dict[str, Callable] = {}


register_baseline = registry.registrar(BASELINES, "baseline")


def _question_key(record) -> tuple:
  """(task, question): a task-3 stance item and a task-4 question may share a question id."""
  return (record.task, str(record.extra.get("question_id") or record.question))


def _profile(record) -> dict:
  """Demographic features of a respondent: converter's `profile`, else the parsed background."""
  profile = record.extra.get("profile")
  return dict(profile) if isinstance(profile, dict) else dict(record.background)


class _Counts:
  """Smoothed answer counts per question, by answer identity."""

  def __init__(self, train_records, smoothing: float):
    self.counts = collections.defaultdict(collections.Counter)
    for r in train_records:
      self.counts[_question_key(r)][r.answer_key] += 1
    self.smoothing = smoothing

  def shares(self, record) -> np.ndarray:
    counts = self.counts.get(_question_key(record))
    if not counts:
      raise KeyError(f"{record.source}: question {_question_key(record)!r} has no training records")
    raw = np.array([counts.get(answer_key(t), 0) for t in record.option_texts()], np.float64)
    raw = raw + self.smoothing
    return raw / raw.sum()


@register_baseline("uniform")
def fit_uniform(train_records) -> Callable:
  del train_records
  return lambda record: np.full(len(record.options), 1.0 / len(record.options))


@register_baseline("majority")
def fit_majority(train_records) -> Callable:
  counts = _Counts(train_records, smoothing=0.0)

  def predict(record):
    shares = counts.shares(record)
    out = np.zeros_like(shares)
    out[int(np.argmax(shares))] = 1.0
    return out
  return predict


@register_baseline("marginal")
def fit_marginal(train_records, smoothing: float = 0.5) -> Callable:
  """Training answer shares, add-`smoothing` so no option gets zero mass (keeps NLL finite)."""
  return _Counts(train_records, smoothing).shares


@register_baseline("logreg")
def fit_logreg(train_records, c: float = 1.0, max_iter: int = 300) -> Callable:
  """Per question, multinomial logistic regression on one-hot demographics."""
  from sklearn.feature_extraction import DictVectorizer
  from sklearn.linear_model import LogisticRegression

  by_question = collections.defaultdict(list)
  for r in train_records:
    by_question[_question_key(r)].append(r)
  models = {}
  for qid, records in by_question.items():
    vectorizer = DictVectorizer()
    x = vectorizer.fit_transform([{k: str(v) for k, v in _profile(r).items()} for r in records])
    y = [r.answer_key for r in records]
    if len(set(y)) == 1:
      models[qid] = (None, y[0])
      continue
    clf = LogisticRegression(C=c, max_iter=max_iter)
    clf.fit(x, y)
    models[qid] = (vectorizer, clf)
  marginal = fit_marginal(train_records)

  def predict(record):
    qid = _question_key(record)
    if qid not in models:
      raise KeyError(f"{record.source}: question {qid!r} has no training records")
    vectorizer, clf = models[qid]
    if vectorizer is None:
      return marginal(record)
    p = clf.predict_proba(vectorizer.transform([{k: str(v) for k, v in _profile(record).items()}]))[0]
    classes = {c_: i for i, c_ in enumerate(clf.classes_)}
    # Options never chosen in training get the marginal's smoothed share of mass.
    out = np.array([p[classes[answer_key(t)]] if answer_key(t) in classes else 0.0
                    for t in record.option_texts()])
    floor = marginal(record)
    out = np.where(out > 0, out, floor)
    return out / out.sum()
  return predict


def check_names(names: Sequence[str]) -> None:
  registry.check_names(BASELINES, list(names), "config.eval.baselines")


def fit_baselines(names: Sequence[str], train_records) -> dict:
  """{name: predict(record) -> distribution}; unknown names list the valid ones."""
  check_names(names)
  if not train_records:
    raise ConfigError("baselines need training records (config.eval.train_data)")
  return {name: BASELINES[name](train_records) for name in names}
