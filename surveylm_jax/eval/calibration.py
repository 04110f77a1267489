"""Temperature scaling of option distributions, and the scores that say how well calibrated they are.

One temperature T per model: a record's distribution p becomes p_T ∝ exp(log p / T) (T > 1
flattens, T < 1 sharpens; the top answer never changes, so accuracy and F1 do not either). T is
fitted on held-out VALIDATION records by minimising the mean NLL of their true answers; callers
must never fit it on the records they then score (eval/runner.py checks that).

Records may list different numbers of options: everything here takes ragged lists (one array per
record) and pads them to one [N, K_max] array with -inf log-probabilities where there is no
option, so padding gets exactly zero mass at any T.

Scores, over records with a prediction (None = no prediction is skipped):
  nll    mean -log p[answer] in nats (p floored at 1e-12, as metrics.negative_log_likelihood).
  brier  mean over records of sum_k (p_k - 1[k = answer])^2 over the record's own options.
  ece    expected calibration error of the top answer: confidence c = max_k p_k, correct =
         1[argmax_k p_k = answer]; records go into ECE_BINS equal-width bins of c on [0, 1]
         (bin b holds b/B <= c < (b+1)/B, the last also c = 1), and
             ECE = sum_b (n_b / N) * |accuracy_b - mean confidence_b|.
  reliability  per non-empty bin: its edges, mean confidence, accuracy and count (the diagram).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

ECE_BINS = 10
T_BOUNDS = (0.05, 20.0)
_EPS = 1e-12               # the probability floor metrics.negative_log_likelihood uses
_GRID = 41                 # coarse log-T grid before the golden-section refinement
_GOLDEN = (np.sqrt(5.0) - 1.0) / 2.0


# ----------------------------------------------------------------------------------------------
# Ragged inputs
# ----------------------------------------------------------------------------------------------

def pad_log_probs(log_probs_list: Sequence) -> np.ndarray:
  """[N, K_max] float64: each record's log-probabilities, -inf where it has no option."""
  if not len(log_probs_list):
    return np.zeros((0, 0))
  width = max(len(lp) for lp in log_probs_list)
  out = np.full((len(log_probs_list), width), -np.inf)
  for i, lp in enumerate(log_probs_list):
    out[i, :len(lp)] = np.asarray(lp, np.float64)
  return out


def _scored(probs_list, answer_indices):
  """(probs, answers) of the records that have a prediction, checked."""
  if len(probs_list) != len(answer_indices):
    raise ValueError(f"{len(probs_list)} distributions for {len(answer_indices)} answers")
  kept = [(np.asarray(p, np.float64), int(a)) for p, a in zip(probs_list, answer_indices) if p is not None]
  for p, a in kept:
    if not 0 <= a < len(p):
      raise ValueError(f"answer index {a} outside a distribution over {len(p)} options")
  return [p for p, _ in kept], np.asarray([a for _, a in kept], np.int64)


# ----------------------------------------------------------------------------------------------
# Temperature
# ----------------------------------------------------------------------------------------------

def _nll_at(log_t: float, logits: np.ndarray, true_logit: np.ndarray) -> float:
  """Mean NLL of the answers under softmax(logits / T); -inf entries (padding, zero mass) stay 0."""
  z = logits / np.exp(log_t)
  top = z.max(axis=1, keepdims=True)
  lse = top[:, 0] + np.log(np.exp(z - top).sum(axis=1))
  return float(np.mean(lse - true_logit / np.exp(log_t)))


def fit_temperature(log_probs_list: Sequence, answer_indices: Sequence[int],
                    bounds: tuple = T_BOUNDS, tol: float = 1e-6) -> float:
  """The T in `bounds` minimising the mean NLL of the answers under p_T ∝ exp(log p / T).

  `log_probs_list[i]` holds record i's log-probabilities (or any logits: a per-record constant
  drops out), one per option; records may differ in length. Records whose answer has zero mass
  (-inf) are left out: no T changes them. Records with one finite entry do not depend on T;
  if no record depends on T, the fit returns 1.0 (no change).

  The NLL is convex in 1/T, so it has one minimum in log T: a coarse grid over log T finds its
  bracket and a golden-section search refines it. Deterministic; 10k records take milliseconds.
  """
  if len(log_probs_list) != len(answer_indices):
    raise ValueError(f"{len(log_probs_list)} records but {len(answer_indices)} answers")
  logits = pad_log_probs(log_probs_list)
  answers = np.asarray(answer_indices, np.int64)
  if not len(logits):
    raise ValueError("fit_temperature needs at least one record")
  if np.any(np.isnan(logits)) or np.any(logits == np.inf):
    raise ValueError("log-probabilities must be finite or -inf")
  true_logit = logits[np.arange(len(answers)), answers]
  informative = np.isfinite(true_logit) & (np.isfinite(logits).sum(axis=1) > 1)
  if not informative.any():
    return 1.0
  logits, true_logit = logits[informative], true_logit[informative]
  # Shift each row so its top entry is 0: same softmax, and no overflow at small T.
  shift = logits.max(axis=1, keepdims=True)
  logits, true_logit = logits - shift, true_logit - shift[:, 0]

  lo, hi = np.log(bounds[0]), np.log(bounds[1])
  grid = np.linspace(lo, hi, _GRID)
  values = [_nll_at(x, logits, true_logit) for x in grid]
  best = int(np.argmin(values))
  a, b = grid[max(best - 1, 0)], grid[min(best + 1, _GRID - 1)]
  c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
  fc, fd = _nll_at(c, logits, true_logit), _nll_at(d, logits, true_logit)
  while b - a > tol:
    if fc <= fd:
      b, d, fd = d, c, fc
      c = b - _GOLDEN * (b - a)
      fc = _nll_at(c, logits, true_logit)
    else:
      a, c, fc = c, d, fd
      d = a + _GOLDEN * (b - a)
      fd = _nll_at(d, logits, true_logit)
  # The bracket's ends are candidates too: a minimum at a bound is one of them.
  candidates = [(values[best], grid[best]), (fc, c), (fd, d)]
  return float(np.exp(min(candidates)[1]))


def apply_temperature(dist, temperature: float):
  """`dist` (probabilities over one record's options; None passes through) at temperature T:
  p_T ∝ p^(1/T). Options with zero mass keep zero mass at every T."""
  if dist is None:
    return None
  if not temperature > 0:
    raise ValueError(f"temperature must be positive, got {temperature}")
  p = np.asarray(dist, np.float64)
  with np.errstate(divide="ignore"):
    z = np.log(p) / temperature
  z = np.exp(z - z.max())
  return z / z.sum()


def log_probs(probs_list: Sequence) -> list:
  """Log of each distribution (None kept), zeros as -inf: the input fit_temperature takes."""
  with np.errstate(divide="ignore"):
    return [None if p is None else np.log(np.asarray(p, np.float64)) for p in probs_list]


def fit_on_distributions(probs_list: Sequence, answer_indices: Sequence[int], **kwargs) -> float:
  """fit_temperature on probability distributions; records without a prediction are skipped."""
  probs, answers = _scored(probs_list, answer_indices)
  if not probs:
    raise ValueError("no record with a prediction to fit a temperature on")
  return fit_temperature(log_probs(probs), answers, **kwargs)


# ----------------------------------------------------------------------------------------------
# Scores
# ----------------------------------------------------------------------------------------------

def nll(probs_list: Sequence, answer_indices: Sequence[int]) -> float:
  """Mean -log p[answer] (floored at 1e-12) over records with a prediction; nan for none."""
  probs, answers = _scored(probs_list, answer_indices)
  if not probs:
    return float("nan")
  return float(-np.mean([np.log(max(p[a], _EPS)) for p, a in zip(probs, answers)]))


def brier(probs_list: Sequence, answer_indices: Sequence[int]) -> float:
  """Mean over records of sum_k (p_k - y_k)^2, y the one-hot answer (0 best, 2 worst)."""
  probs, answers = _scored(probs_list, answer_indices)
  if not probs:
    return float("nan")
  return float(np.mean([np.sum((p - np.eye(len(p))[a]) ** 2) for p, a in zip(probs, answers)]))


def reliability(probs_list: Sequence, answer_indices: Sequence[int], bins: int = ECE_BINS) -> list[dict]:
  """The reliability diagram: per non-empty equal-width confidence bin, {"lower", "upper",
  "confidence" (mean top probability), "accuracy" (share whose top answer is right), "count"}."""
  probs, answers = _scored(probs_list, answer_indices)
  if not probs:
    return []
  conf = np.asarray([p.max() for p in probs])
  hit = np.asarray([float(np.argmax(p) == a) for p, a in zip(probs, answers)])
  which = np.clip(np.floor(conf * bins).astype(np.int64), 0, bins - 1)
  out = []
  for b in range(bins):
    inside = which == b
    if inside.any():
      out.append({"lower": b / bins, "upper": (b + 1) / bins, "confidence": float(conf[inside].mean()),
                  "accuracy": float(hit[inside].mean()), "count": int(inside.sum())})
  return out


def ece_from_reliability(bins_data: Sequence[dict]) -> float:
  total = sum(b["count"] for b in bins_data)
  if not total:
    return float("nan")
  return float(sum(b["count"] / total * abs(b["accuracy"] - b["confidence"]) for b in bins_data))


def expected_calibration_error(probs_list: Sequence, answer_indices: Sequence[int],
                               bins: int = ECE_BINS) -> float:
  """ECE of the top answer over `bins` equal-width confidence bins (module docstring)."""
  return ece_from_reliability(reliability(probs_list, answer_indices, bins))


def calibration_metrics(probs_list: Sequence, answer_indices: Sequence[int], bins: int = ECE_BINS) -> dict:
  """{"scored", "accuracy", "nll", "brier", "ece", "reliability"} of one set of predictions."""
  probs, answers = _scored(probs_list, answer_indices)
  bins_data = reliability(probs, answers, bins)
  hits = [np.argmax(p) == a for p, a in zip(probs, answers)]
  return {"scored": len(probs), "accuracy": float(np.mean(hits)) if hits else float("nan"),
          "nll": nll(probs, answers), "brier": brier(probs, answers),
          "ece": ece_from_reliability(bins_data), "reliability": bins_data}
