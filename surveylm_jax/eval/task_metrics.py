"""Per-task metrics from predictions. Inputs are plain values (answer texts, indices, stance
names, value tuples), so any read-out (option scoring, generation + parsing, a baseline) feeds them.
"""
from __future__ import annotations

import collections
from typing import Sequence

import numpy as np

from surveylm_jax.data.answers import answer_key
from surveylm_jax.eval import metrics, text_metrics


def survey_response_metrics(option_texts: Sequence[Sequence[str]], targets: Sequence[int],
                            probs: Sequence[np.ndarray | None],
                            ordinal: Sequence[bool] | None = None) -> dict:
  """Task 4 individual. `probs[i]` is the predicted distribution over `option_texts[i]` (None = no
  prediction: a parse failure). Classes are answer identities (option text), so the same answer
  under different letters in shuffled records is one class. RPS is ordinal: it is computed over
  records whose options are in their question's canonical order and `ordinal[i]` is True (all
  records when `ordinal` is None), and `rps_records` says how many that was."""
  n = len(targets)
  if not (len(option_texts) == len(probs) == n):
    raise metrics.MetricInputError(f"{len(option_texts)} option lists, {n} targets, {len(probs)} predictions")
  true = [answer_key(option_texts[i][targets[i]]) for i in range(n)]
  predicted = [None if p is None else answer_key(option_texts[i][int(np.argmax(p))])
               for i, p in enumerate(probs)]
  out = metrics.classification_metrics(true, predicted)
  out["per_option_accuracy"] = metrics.per_option_accuracy(true, predicted)
  scored = [i for i, p in enumerate(probs) if p is not None]
  # Probabilistic scores need one K: computed per K and averaged by record count.
  by_k = collections.defaultdict(list)
  for i in scored:
    by_k[len(option_texts[i])].append(i)
  sums = collections.Counter()
  rps_records = 0
  for k, idx in by_k.items():
    p = np.stack([np.asarray(probs[i], np.float64) for i in idx])
    t = [targets[i] for i in idx]
    sums["nll"] += metrics.negative_log_likelihood(p, t) * len(idx)
    sums["brier"] += metrics.brier_score(p, t) * len(idx)
    ordered = [j for j, i in enumerate(idx) if ordinal is None or ordinal[i]]
    if ordered:
      sums["rps"] += metrics.ranked_probability_score(p[ordered], [t[j] for j in ordered]) * len(ordered)
      rps_records += len(ordered)
  for key in ("nll", "brier"):
    out[key] = sums[key] / len(scored) if scored else float("nan")
  out["rps"] = sums["rps"] / rps_records if rps_records else float("nan")
  out["scored"], out["rps_records"] = len(scored), rps_records
  return out


def stance_metrics(true_stances: Sequence[str], predicted: Sequence[tuple | None],
                   true_reasons: Sequence[str]) -> dict:
  """Task 3 individual: `predicted[i]` is (stance, reason) or None (parse failure)."""
  labels = [None if p is None else p[0] for p in predicted]
  out = metrics.classification_metrics(list(true_stances), labels)
  pairs = [(p[1], r) for p, r in zip(predicted, true_reasons) if p is not None]
  n = max(len(predicted), 1)  # failures score 0 similarity, so they cannot flatter the mean
  out["reason_jaccard"] = sum(text_metrics.token_jaccard(a, b) for a, b in pairs) / n
  out["reason_cosine"] = sum(text_metrics.token_cosine(a, b) for a, b in pairs) / n
  out["reason_rougeL"] = sum(text_metrics.rouge_l(a, b) for a, b in pairs) / n
  return out


def _is_count(values) -> bool:
  return len(values) == 1 and str(values[0]).strip().lstrip("-").isdigit()


def role_inference_metrics(fields: Sequence[str], targets: Sequence[Sequence[str]],
                           predicted: Sequence[Sequence[str] | None]) -> dict:
  """Task 1: per field, accuracy. Single values: exact match by answer identity; counts: exact
  number; multi-valued fields: set overlap |pred ∩ true| / |pred ∪ true|. None = parse failure (0)."""
  per_field = collections.defaultdict(list)
  failures = collections.Counter()
  for field, target, pred in zip(fields, targets, predicted):
    if pred is None:
      per_field[field].append(0.0)
      failures[field] += 1
      continue
    if _is_count(target):
      ok = _is_count(pred) and int(str(pred[0]).strip()) == int(str(target[0]).strip())
      per_field[field].append(float(ok))
      continue
    t, p = {answer_key(v) for v in target}, {answer_key(v) for v in pred}
    per_field[field].append(float(t == p) if len(t) == 1 else len(t & p) / len(t | p))
  accuracy = {f: float(np.mean(v)) for f, v in sorted(per_field.items())}
  return {"n": len(fields), "accuracy_per_field": accuracy,
          "mean_field_accuracy": float(np.mean(list(accuracy.values()))) if accuracy else float("nan"),
          "parse_failures": sum(failures.values()), "parse_failures_per_field": dict(failures)}
