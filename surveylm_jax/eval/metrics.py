"""Distribution and classification metrics. Knows nothing of models, data files or surveys.

Distributions are arrays [..., K] over a question's options *in the question's canonical order*
(`surveylm_jax.data.question_catalog`; not a record's listed order), so option k sits at ordinal
position k. Never sort labels before calling these: the
reference scripts sort option labels alphabetically, which puts 积极/中立/消极 (positive/neutral/
negative) in the order 中立/消极/积极 and measures the wrong distance.

`ordinal_wasserstein` is computed with ott-jax's univariate (quantile) solver, so the same code
is a differentiable JAX loss (`ordinal_wasserstein_jax`) and a reported metric.
"""
from __future__ import annotations

import collections
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from ott.geometry import costs, pointcloud
from ott.problems.linear import linear_problem
from ott.solvers.linear import univariate

_SUM_TOLERANCE = 1e-4


class MetricInputError(ValueError):
  """A distribution or label list that a metric cannot be computed on."""


# ----------------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------------

def check_distribution(p, name: str = "distribution", tolerance: float = _SUM_TOLERANCE) -> np.ndarray:
  """A float64 copy of `p` [..., K] after checking it is finite, non-negative and sums to 1."""
  arr = np.asarray(p, dtype=np.float64)
  if arr.ndim == 0 or arr.shape[-1] == 0:
    raise MetricInputError(f"{name}: needs at least one option, got shape {arr.shape}")
  if not np.all(np.isfinite(arr)):
    raise MetricInputError(f"{name}: has non-finite entries: {arr}")
  if np.any(arr < -1e-12):
    raise MetricInputError(f"{name}: has negative entries: {arr}")
  sums = arr.sum(axis=-1)
  if np.any(np.abs(sums - 1.0) > tolerance):
    raise MetricInputError(f"{name}: does not sum to 1 (sums {np.round(sums, 6)}); normalise it first")
  return np.clip(arr, 0.0, None)


def _pair(p, q):
  p = check_distribution(p, "p")
  q = check_distribution(q, "q")
  if p.shape != q.shape:
    raise MetricInputError(f"p has shape {p.shape} but q has shape {q.shape}: both must list the "
                           "same options in the same order")
  return p, q


def _is_traced(*xs) -> bool:
  return any(isinstance(x, jax.core.Tracer) for x in xs)


# ----------------------------------------------------------------------------------------------
# Group-level distances
# ----------------------------------------------------------------------------------------------

def _w1_one(p, q):
  """W1 between two distributions on positions 0..K-1 with cost |i - j| (ott quantile solver)."""
  k = p.shape[-1]
  support = jnp.arange(k, dtype=p.dtype)[:, None]
  geom = pointcloud.PointCloud(support, support, cost_fn=costs.PNormP(1.0))
  prob = linear_problem.LinearProblem(geom, a=p, b=q)
  return univariate.quantile_solver(prob).ot_costs[0]


@functools.partial(jax.jit, static_argnames=("normalize",))
def ordinal_wasserstein_jax(p, q, normalize: bool = False):
  """Traceable W1 over [..., K] (no input checks): use it as a loss inside jit/grad."""
  p = jnp.asarray(p, jnp.float32)
  q = jnp.asarray(q, jnp.float32)
  k = p.shape[-1]
  flat = jax.vmap(_w1_one)(p.reshape(-1, k), q.reshape(-1, k)).reshape(p.shape[:-1])
  if normalize:
    flat = flat / max(k - 1, 1)
  return flat


def ordinal_wasserstein(p, q, normalize: bool = False):
  """Wasserstein-1 between answer distributions over ordinal positions 0..K-1.

  Args:
    p, q: [..., K] distributions over the same options in the question's own order. Options with
      zero mass count (a distribution whose support differs from the other's is still compared on
      all K positions).
    normalize: divide by K-1, the largest possible distance, so the result is in [0, 1].
  Returns:
    A float for 1-D inputs, else a numpy array of shape [...]; traced inputs give a jax array.
  """
  if _is_traced(p, q):
    return ordinal_wasserstein_jax(p, q, normalize)
  p, q = _pair(p, q)
  if p.shape[-1] == 1:
    out = np.zeros(p.shape[:-1])
  else:
    out = np.asarray(ordinal_wasserstein_jax(p, q, normalize), dtype=np.float64)
  return float(out) if out.ndim == 0 else out


def representativeness(p, q) -> float:
  """1 - W1/(K-1): 1 means the predicted distribution matches the human one exactly."""
  return 1.0 - ordinal_wasserstein(p, q, normalize=True)


def kl_divergence(p, q, eps: float = 1e-12):
  """KL(p || q) in nats. `eps` keeps it finite where q has no mass but p does (reported as large)."""
  p, q = _pair(p, q)
  terms = np.where(p > 0, p * (np.log(np.maximum(p, eps)) - np.log(np.maximum(q, eps))), 0.0)
  out = terms.sum(-1)
  return float(out) if out.ndim == 0 else out


def jensen_shannon(p, q):
  """Jensen-Shannon divergence in bits (base 2): 0 for equal, 1 for disjoint supports."""
  p, q = _pair(p, q)
  m = 0.5 * (p + q)

  def kl2(a, b):
    return np.where(a > 0, a * np.log2(np.where(a > 0, a, 1.0) / np.where(b > 0, b, 1.0)), 0.0).sum(-1)

  out = 0.5 * kl2(p, m) + 0.5 * kl2(q, m)
  out = np.clip(out, 0.0, 1.0)
  return float(out) if out.ndim == 0 else out


def total_variation(p, q):
  p, q = _pair(p, q)
  out = 0.5 * np.abs(p - q).sum(-1)
  return float(out) if out.ndim == 0 else out


ORDINAL_DISTANCES = ("w1", "w1_normalized", "representativeness")
NOMINAL_DISTANCES = ("js", "tv", "kl")


def distribution_metrics(predicted, human, ordinal: bool = True) -> dict:
  """Every group-level distance between one predicted and one human distribution. A nominal
  question (`ordinal=False`, no known option order) gets no W1 or representativeness."""
  out = {"js": jensen_shannon(predicted, human), "tv": total_variation(predicted, human),
         "kl": kl_divergence(human, predicted)}
  if ordinal:
    k = len(human)
    w1 = ordinal_wasserstein(predicted, human)
    out.update(w1=w1, w1_normalized=w1 / max(k - 1, 1), representativeness=1 - w1 / max(k - 1, 1))
  return out


# ----------------------------------------------------------------------------------------------
# Probabilistic scores of individual predictions
# ----------------------------------------------------------------------------------------------

def _probs_and_targets(probs, targets):
  probs = check_distribution(probs, "predicted probabilities")
  if probs.ndim != 2:
    raise MetricInputError(f"predicted probabilities must be [records, K], got {probs.shape}")
  targets = np.asarray(targets, dtype=np.int64)
  if targets.shape != (probs.shape[0],):
    raise MetricInputError(f"{targets.shape[0] if targets.ndim else 0} targets for {probs.shape[0]} records")
  if np.any((targets < 0) | (targets >= probs.shape[1])):
    raise MetricInputError(f"target indices must be in [0, {probs.shape[1]}), got {targets}")
  return probs, targets


def negative_log_likelihood(probs, targets, eps: float = 1e-12) -> float:
  """Mean -log p(target) in nats over records [N, K] with targets [N]."""
  probs, targets = _probs_and_targets(probs, targets)
  return float(-np.mean(np.log(np.maximum(probs[np.arange(len(targets)), targets], eps))))


def brier_score(probs, targets) -> float:
  """Mean over records of sum_k (p_k - 1[k = target])^2 (0 best, 2 worst)."""
  probs, targets = _probs_and_targets(probs, targets)
  onehot = np.eye(probs.shape[1])[targets]
  return float(np.mean(((probs - onehot) ** 2).sum(-1)))


def ranked_probability_score(probs, targets) -> float:
  """Mean over records of sum_k (CDF_pred(k) - CDF_true(k))^2 / (K-1): ordinal-aware Brier."""
  probs, targets = _probs_and_targets(probs, targets)
  k = probs.shape[1]
  if k == 1:
    return 0.0
  cdf_pred = np.cumsum(probs, axis=1)[:, :-1]
  cdf_true = np.cumsum(np.eye(k)[targets], axis=1)[:, :-1]
  return float(np.mean(((cdf_pred - cdf_true) ** 2).sum(-1) / (k - 1)))


# ----------------------------------------------------------------------------------------------
# Classification over answer identity
# ----------------------------------------------------------------------------------------------

def classification_metrics(true_labels: Sequence[str], predicted_labels: Sequence[str | None]) -> dict:
  """Accuracy and macro / weighted F1 over answer identities (option texts, never letters).

  A prediction of None is a parse failure: it counts as wrong (never as a class) and is reported.
  Classes are the union of true and predicted labels (as scikit-learn does): a predicted answer
  that never occurs as truth is a class with F1 = 0.
  """
  if len(true_labels) != len(predicted_labels):
    raise MetricInputError(f"{len(true_labels)} true labels but {len(predicted_labels)} predictions")
  n = len(true_labels)
  if n == 0:
    raise MetricInputError("no records to score")
  true_labels = [str(t) for t in true_labels]
  classes = sorted(set(true_labels) | {p for p in predicted_labels if p is not None})
  tp, fp, fn = collections.Counter(), collections.Counter(), collections.Counter()
  support = collections.Counter(true_labels)
  correct = 0
  for t, p in zip(true_labels, predicted_labels):
    if p == t:
      tp[t] += 1
      correct += 1
    else:
      fn[t] += 1
      if p is not None:
        fp[p] += 1
  f1 = {}
  for c in classes:
    precision = tp[c] / (tp[c] + fp[c]) if tp[c] + fp[c] else 0.0
    recall = tp[c] / (tp[c] + fn[c]) if tp[c] + fn[c] else 0.0
    f1[c] = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  weighted = sum(f1[c] * support[c] for c in classes) / n
  return {"n": n, "accuracy": correct / n, "macro_f1": float(np.mean([f1[c] for c in classes])),
          "weighted_f1": weighted, "parse_failures": sum(p is None for p in predicted_labels),
          "f1_per_class": f1}


def per_option_accuracy(true_labels: Sequence[str], predicted_labels: Sequence[str | None]) -> dict:
  """Recall of each true answer: of the records whose answer is X, the share predicted X."""
  hits, totals = collections.Counter(), collections.Counter()
  for t, p in zip(true_labels, predicted_labels):
    totals[t] += 1
    hits[t] += int(p == t)
  return {t: hits[t] / totals[t] for t in sorted(totals)}
