"""Baselines that predict an answer distribution per record without a language model.

All fit on the training split's task-4 records and predict distributions over a test record's
options in listed order, so they go through the same metrics as the model:
  uniform   1/K for every option;
  majority  all mass on the training split's most common answer to the question;
  marginal  the training split's answer shares for the question;
  logreg    per question, a multinomial logistic regression on the respondent's demographics
            (one-hot profile fields), scikit-learn. A profile value (or field) never seen in
            training is ignored, so a split by population needs nothing more.
Questions are matched by `question_id` (converter metadata) or else by question text; answers by
answer identity (option text), so shuffled option orders in test records are handled. These four
need the test question in the training data (they raise KeyError otherwise).

Baselines matched to generalization splits, each named after what it saw in training:
  unseen questions    position_prior, tfidf_transfer, demographics_pooled  (transfer_baselines.py)
  later waves         persistence, logreg_year                             (wave_baselines.py)
  answers in context  logreg_context, gboost_context                       (context_baselines.py)
  other populations   logreg, trained on a file holding only the other populations

A baseline is a registered `fit(train_records) -> predict(record) -> distribution over the
record's listed options`; name it in `config.eval.baselines`:

    from surveylm_jax.eval import baselines

    @baselines.register_baseline("first_option")
    def fit_first_option(train_records):
      return lambda record: np.eye(len(record.options))[0]

`answer_key(text)` (surveylm_jax.data) gives the answer identity to match training answers by.
A baseline with a `catalog` keyword gets the evaluation's `QuestionCatalog` from `fit_baselines`
(for canonical option positions); without one it reads the catalogs beside the records' files.
"""
from __future__ import annotations

import collections
import inspect
from typing import Callable, Sequence

import numpy as np

from surveylm_jax import registry
from surveylm_jax.cli import ConfigError
from surveylm_jax.data.answers import answer_key

BASELINES: dict[str, Callable] = {}


register_baseline = registry.registrar(BASELINES, "baseline")


UNSEEN_QUESTION_BASELINES = ("position_prior", "tfidf_transfer", "demographics_pooled")


def question_key(record) -> tuple:
  """(task, question): a task-3 stance item and a task-4 question may share a question id."""
  return (record.task, str(record.extra.get("question_id") or record.question))


def profile_features(record) -> dict:
  """Demographic features of a respondent, one-hot ready (values as text): the converter's
  `profile`, else the parsed background."""
  profile = record.extra.get("profile")
  profile = profile if isinstance(profile, dict) else record.background
  return {str(k): str(v) for k, v in dict(profile).items()}


def unseen_question(record, baseline: str) -> KeyError:
  """The error for a question with no training records, naming the baselines that handle it."""
  return KeyError(f"{record.source}: question {question_key(record)!r} has no training records, which "
                  f"baseline {baseline!r} needs; for questions not in the training data use "
                  f"{', '.join(UNSEEN_QUESTION_BASELINES)}")


def smooth(p, floor: float = 1e-3) -> np.ndarray:
  """Strictly positive and summing to 1 (keeps NLL finite): `floor` of the mass spread evenly."""
  p = np.clip(np.asarray(p, np.float64), 0.0, None)
  total = p.sum()
  p = p / total if total > 0 and np.isfinite(total) else np.full(len(p), 1.0 / len(p))
  return (1.0 - floor) * p + floor / len(p)


class AnswerCounts:
  """Smoothed answer counts per question, by answer identity."""

  def __init__(self, train_records, smoothing: float, name: str = "marginal"):
    self.name = name
    self.counts = collections.defaultdict(collections.Counter)
    for r in train_records:
      self.counts[question_key(r)][r.answer_key] += 1
    self.smoothing = smoothing

  def shares(self, record) -> np.ndarray:
    counts = self.counts.get(question_key(record))
    if not counts:
      raise unseen_question(record, self.name)
    raw = np.array([counts.get(answer_key(t), 0) for t in record.option_texts()], np.float64)
    raw = raw + self.smoothing
    return raw / raw.sum()


@register_baseline("uniform")
def fit_uniform(train_records) -> Callable:
  del train_records
  return lambda record: np.full(len(record.options), 1.0 / len(record.options))


@register_baseline("majority")
def fit_majority(train_records) -> Callable:
  counts = AnswerCounts(train_records, smoothing=0.0, name="majority")

  def predict(record):
    shares = counts.shares(record)
    out = np.zeros_like(shares)
    out[int(np.argmax(shares))] = 1.0
    return out
  return predict


@register_baseline("marginal")
def fit_marginal(train_records, smoothing: float = 0.5) -> Callable:
  """Training answer shares, add-`smoothing` so no option gets zero mass (keeps NLL finite)."""
  return AnswerCounts(train_records, smoothing).shares


class QuestionClassifiers:
  """Per question, a scikit-learn classifier of the answer (by identity) from `features(record)`
  (a dict; text values are one-hot, numbers stay numeric). A question everybody answered alike
  gets no classifier: its training answer is certain (up to the marginal's smoothing).
  `floor` > 0 smooths the output (see `smooth`): for classifiers that can be all but certain."""

  def __init__(self, train_records, features: Callable, make_classifier: Callable, name: str,
               dense: bool = False, floor: float = 0.0):
    from sklearn.feature_extraction import DictVectorizer
    self.features, self.name, self.floor = features, name, floor
    by_question = collections.defaultdict(list)
    for r in train_records:
      by_question[question_key(r)].append(r)
    self.models = {}
    for qid, records in by_question.items():
      y = [r.answer_key for r in records]
      if len(set(y)) == 1:
        self.models[qid] = (None, y[0])
        continue
      # DictVectorizer drops features it never saw in fit: unseen profile values cannot crash.
      vectorizer = DictVectorizer(sparse=not dense)
      clf = make_classifier()
      clf.fit(vectorizer.fit_transform([features(r) for r in records]), y)
      self.models[qid] = (vectorizer, clf)
    self.marginal = fit_marginal(train_records)

  def answer_probs(self, qid, record) -> dict:
    """{answer key: probability} of training question `qid` for `record`'s features."""
    vectorizer, clf = self.models[qid]
    if vectorizer is None:
      return {clf: 1.0}
    p = clf.predict_proba(vectorizer.transform([self.features(record)]))[0]
    return dict(zip(clf.classes_, p))

  def __call__(self, record) -> np.ndarray:
    qid = question_key(record)
    if qid not in self.models:
      raise unseen_question(record, self.name)
    if self.models[qid][0] is None:
      return self.marginal(record)
    probs = self.answer_probs(qid, record)
    out = np.array([probs.get(answer_key(t), 0.0) for t in record.option_texts()])
    # Options never chosen in training get the marginal's smoothed share of mass.
    out = np.where(out > 0, out, self.marginal(record))
    return smooth(out, self.floor) if self.floor else out / out.sum()


def logistic_regression(c: float = 1.0, max_iter: int = 300) -> Callable:
  from sklearn.linear_model import LogisticRegression
  return lambda: LogisticRegression(C=c, max_iter=max_iter)


@register_baseline("logreg")
def fit_logreg(train_records, c: float = 1.0, max_iter: int = 300) -> Callable:
  """Per question, multinomial logistic regression on one-hot demographics."""
  return QuestionClassifiers(train_records, profile_features, logistic_regression(c, max_iter), "logreg")


def check_names(names: Sequence[str]) -> None:
  registry.check_names(BASELINES, list(names), "config.eval.baselines")


def fit_baselines(names: Sequence[str], train_records, catalog=None) -> dict:
  """{name: predict(record) -> distribution}; unknown names list the valid ones. `catalog` (the
  evaluation's QuestionCatalog) goes to the baselines that take one."""
  check_names(names)
  if not train_records:
    raise ConfigError("baselines need training records (config.eval.train_data)")
  return {name: _fit(BASELINES[name], train_records, catalog) for name in names}


def _fit(fn: Callable, train_records, catalog) -> Callable:
  # Only baselines that map by canonical position ask for the catalog (a `catalog` keyword).
  if catalog is not None and "catalog" in inspect.signature(fn).parameters:
    return fn(train_records, catalog=catalog)
  return fn(train_records)


# The matched baselines register themselves on import; imported last, as they use the above.
from surveylm_jax.eval import context_baselines, transfer_baselines, wave_baselines  # noqa: E402,F401
