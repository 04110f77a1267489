"""Baselines for questions never seen in training: they carry what training taught about *other*
questions over by canonical option position (the question catalog's order, as the metrics use).

  position_prior       the pooled share of answers at each canonical position, over training
                       questions with as many options (each question weighs the same; with no
                       such question, all questions' shares stretched onto K positions);
  tfidf_transfer       the training question most like the test one (TF-IDF cosine of question
                       plus option texts, same number of options), its per-question demographic
                       logistic regression (as `logreg`), read by canonical position;
                       position_prior when no training question has as many options;
  demographics_pooled  one logistic regression over every training record, from one-hot
                       demographics plus the number of options to the canonical position.

Test records may list options in any order: positions come from the answer texts, never from
where an option is listed. A test question seen in training is handled the same way (for
tfidf_transfer its own wording is then the nearest).
"""
from __future__ import annotations

import collections
import copy
from typing import Callable

import numpy as np

from surveylm_jax.data.answers import answer_key
from surveylm_jax.data.question_catalog import QuestionCatalog, codebook_catalogs
from surveylm_jax.eval import baselines, canonical
from surveylm_jax.eval.baselines import (logistic_regression, profile_features, question_key,
                                         register_baseline, smooth)


class CanonicalPositions:
  """Canonical position of each option of a record, from `catalog`, else from the codebook
  catalogs beside the record's file plus the shipped one (the runner's precedence)."""

  def __init__(self, catalog: QuestionCatalog | None = None):
    # A private copy: resolving training questions must not add them to the runner's catalog
    # report, which counts the evaluated questions.
    self.catalog = None
    if catalog is not None:
      self.catalog = copy.copy(catalog)
      self.catalog.resolved, self.catalog.seen_by_key = {}, {}
    self._by_path: dict[str, QuestionCatalog] = {}
    self._by_files: dict[tuple, QuestionCatalog] = {}

  def _catalog_for(self, record) -> QuestionCatalog:
    if self.catalog is not None:
      return self.catalog
    path = str(record.source.path)
    if path not in self._by_path:
      files = tuple(codebook_catalogs([path]))
      if files not in self._by_files:
        self._by_files[files] = QuestionCatalog((), files)
      self._by_path[path] = self._by_files[files]
    return self._by_path[path]

  def view(self, record) -> canonical.CanonicalView:
    return canonical.view(self._catalog_for(record), record)

  def canonical_options(self, record) -> list:
    return self.view(record).options

  def of_listed(self, record) -> np.ndarray:
    """pos[i] = canonical position of the i-th listed option (the inverse of the view's perm)."""
    return np.argsort(self.view(record).perm)

  def of_answer(self, record) -> int:
    return self.view(record).index(record.target_index)


def _stretch(shares: np.ndarray, k: int) -> np.ndarray:
  """Shares over len(shares) positions moved onto k positions by relative place (first stays
  first, last stays last), each split linearly between the two nearest new positions."""
  out = np.zeros(k)
  n = len(shares)
  for j, s in enumerate(shares):
    x = j * (k - 1) / (n - 1) if n > 1 else 0.0
    lo = int(np.floor(x))
    hi = min(lo + 1, k - 1)
    out[lo] += s * (1.0 - (x - lo))
    out[hi] += s * (x - lo)
  return out


class PositionPrior:
  """Mean per-question answer shares by canonical position, per number of options K."""

  def __init__(self, train_records, positions: CanonicalPositions, smoothing: float = 0.5):
    counts: dict[tuple, np.ndarray] = {}
    for r in train_records:
      # By K too: a question asked with more options in one wave counts as another question.
      qid = (question_key(r), len(r.options))
      if qid not in counts:
        counts[qid] = np.zeros(len(r.options))
      counts[qid][positions.of_answer(r)] += 1
    self.per_question = [(c + smoothing) / (c + smoothing).sum() for c in counts.values()]
    by_k = collections.defaultdict(list)
    for shares in self.per_question:
      by_k[len(shares)].append(shares)
    self.by_k = {k: np.mean(v, axis=0) for k, v in by_k.items()}
    self.positions = positions

  def over_positions(self, k: int) -> np.ndarray:
    if k in self.by_k:
      return self.by_k[k]
    return np.mean([_stretch(s, k) for s in self.per_question], axis=0)

  def __call__(self, record) -> np.ndarray:
    return smooth(self.over_positions(len(record.options))[self.positions.of_listed(record)])


@register_baseline("position_prior")
def fit_position_prior(train_records, catalog: QuestionCatalog | None = None) -> Callable:
  return PositionPrior(train_records, CanonicalPositions(catalog))


def _document(record, positions: CanonicalPositions) -> str:
  """Question and option texts (canonical order, so a shuffled listing reads the same)."""
  question = record.question or str(record.extra.get("question_id") or "")
  return "\n".join([question, *positions.canonical_options(record)])


@register_baseline("tfidf_transfer")
def fit_tfidf_transfer(train_records, catalog: QuestionCatalog | None = None, c: float = 1.0,
                       max_iter: int = 300) -> Callable:
  from sklearn.feature_extraction.text import TfidfVectorizer
  positions = CanonicalPositions(catalog)
  prior = PositionPrior(train_records, positions)
  classifiers = baselines.QuestionClassifiers(train_records, profile_features,
                                              logistic_regression(c, max_iter), "tfidf_transfer")
  # One representative record per training question: its wording, options and canonical order.
  first = {}
  for r in train_records:
    first.setdefault(question_key(r), r)
  qids = list(first)
  # Character n-grams: word-free scripts (Chinese) and inflections match as well as English words.
  vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), sublinear_tf=True)
  matrix = vectorizer.fit_transform([_document(first[q], positions) for q in qids])
  sizes = np.asarray([len(first[q].options) for q in qids])
  nearest_cache: dict[tuple, object] = {}

  def nearest(record):
    """The most similar training question with as many options (None if there is none)."""
    key = (question_key(record), frozenset(answer_key(t) for t in record.option_texts()))
    if key not in nearest_cache:
      sims = (matrix @ vectorizer.transform([_document(record, positions)]).T).toarray().ravel()
      sims = np.where(sizes == len(record.options), sims, -np.inf)
      best = int(np.argmax(sims))
      nearest_cache[key] = qids[best] if np.isfinite(sims[best]) else None
    return nearest_cache[key]

  def predict(record):
    qid = nearest(record)
    if qid is None:
      return prior(record)
    probs = classifiers.answer_probs(qid, record)
    source = first[qid]
    by_position = np.zeros(len(source.options))
    for listed, pos in zip(source.option_texts(), positions.of_listed(source)):
      by_position[pos] = probs.get(answer_key(listed), 0.0)
    return smooth(by_position[positions.of_listed(record)])

  predict.nearest = nearest   # which training question was used: for tests and inspection
  return predict


@register_baseline("demographics_pooled")
def fit_demographics_pooled(train_records, catalog: QuestionCatalog | None = None, c: float = 1.0,
                            max_iter: int = 300) -> Callable:
  from sklearn.feature_extraction import DictVectorizer
  positions = CanonicalPositions(catalog)

  def features(record) -> dict:
    # K one-hot: a 3-option and a 5-option question put their answers at different positions.
    return {**profile_features(record), "\x00options": str(len(record.options))}

  vectorizer = DictVectorizer()
  x = vectorizer.fit_transform([features(r) for r in train_records])
  y = np.asarray([positions.of_answer(r) for r in train_records])
  if len(set(y.tolist())) == 1:   # one position only: nothing for a classifier to separate
    return PositionPrior(train_records, positions)
  clf = logistic_regression(c, max_iter)()
  clf.fit(x, y)
  column = {int(cls): i for i, cls in enumerate(clf.classes_)}

  def predict(record):
    k = len(record.options)
    p = clf.predict_proba(vectorizer.transform([features(record)]))[0]
    # Positions beyond K belong to longer questions: keep the first K and renormalize.
    by_position = np.array([p[column[j]] if j in column else 0.0 for j in range(k)])
    return smooth(by_position[positions.of_listed(record)])
  return predict
