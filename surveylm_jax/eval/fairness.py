"""Subgroup (fairness) metrics for task 4: how well a predictor does for specific kinds of people.

Subgroups come from config as profile conditions: "rural resident=yes", "age group=76 and over",
"yearly income=under $20,000" (the AlignSurvey paper's rural / oldest / lowest-income groups), and
from whole columns ("sex", "race") which expand to one subgroup per value seen. For each subgroup:
accuracy, macro F1, NLL and the mean over questions of W1 between the subgroup's mean predicted
distribution and its human answer shares. Then per metric: worst subgroup, range, and each
subgroup's gap to the whole sample.
"""
from __future__ import annotations

import collections
from typing import Sequence

import numpy as np

from surveylm_jax.eval import metrics, task_metrics

_HIGHER_IS_BETTER = {"accuracy": True, "macro_f1": True, "nll": False, "w1_normalized": False}


def parse_subgroup(spec: str) -> tuple[str, str]:
  if "=" not in spec:
    raise ValueError(f"subgroup {spec!r} must be 'field=value' (e.g. 'rural resident=yes')")
  field, value = spec.split("=", 1)
  return field.strip(), value.strip()


def subgroup_tags(profile: dict, conditions: Sequence[str], columns: Sequence[str]) -> list[str]:
  """The subgroup names a respondent belongs to ('field=value')."""
  tags = []
  for spec in conditions:
    field, value = parse_subgroup(spec)
    if str(profile.get(field)) == value:
      tags.append(f"{field}={value}")
  for column in columns:
    if profile.get(column) is not None:
      tag = f"{column}={profile[column]}"
      if tag not in tags:
        tags.append(tag)
  return tags


def _subset_metrics(idx, option_texts, targets, probs, question_ids) -> dict:
  out = task_metrics.survey_response_metrics([option_texts[i] for i in idx], [targets[i] for i in idx],
                                             [probs[i] for i in idx])
  w1s = []
  by_q = collections.defaultdict(list)
  for i in idx:
    if probs[i] is not None:
      by_q[question_ids[i]].append(i)
  for members in by_q.values():
    k = len(option_texts[members[0]])
    human = np.bincount([targets[i] for i in members], minlength=k) / len(members)
    predicted = np.mean([probs[i] for i in members], axis=0)
    w1s.append(metrics.ordinal_wasserstein(predicted, human, normalize=True))
  return {"n": len(idx), "accuracy": out["accuracy"], "macro_f1": out["macro_f1"], "nll": out["nll"],
          "w1_normalized": float(np.mean(w1s)) if w1s else float("nan")}


def fairness_metrics(tags: Sequence[Sequence[str]], option_texts, targets, probs, question_ids,
                     min_records: int = 20) -> dict:
  """Metrics per subgroup (those with >= min_records records), worst subgroup, range and gaps."""
  overall = _subset_metrics(range(len(targets)), option_texts, targets, probs, question_ids)
  members = collections.defaultdict(list)
  for i, ts in enumerate(tags):
    for t in ts:
      members[t].append(i)
  groups, too_small = {}, {}
  for name in sorted(members):
    if len(members[name]) < min_records:
      too_small[name] = len(members[name])
      continue
    groups[name] = _subset_metrics(members[name], option_texts, targets, probs, question_ids)
  summary = {}
  for metric, higher in _HIGHER_IS_BETTER.items():
    vals = {g: m[metric] for g, m in groups.items() if np.isfinite(m[metric])}
    if not vals:
      continue
    worst = (min if higher else max)(vals, key=vals.get)
    summary[metric] = {"overall": overall[metric], "worst_group": worst, "worst": vals[worst],
                       "range": max(vals.values()) - min(vals.values()),
                       "gap_to_overall": {g: v - overall[metric] for g, v in vals.items()}}
  return {"overall": overall, "subgroups": groups, "summary": summary,
          "skipped_small_subgroups": too_small}
