"""Subgroup (fairness) metrics for task 4: how well a predictor does for specific kinds of people.

Subgroups come from config as profile conditions: "rural resident=yes", "age group=76 and over",
"yearly income=under $20,000", "您的年龄>=65" (the AlignSurvey paper's rural / oldest / lowest-income
groups), and from whole columns ("sex", "race") which expand to one subgroup per value seen. With
"auto" (the default) both come from the data: the paper's groups wherever their fields exist,
recognised in English and Chinese, and every profile field with few values. For each subgroup:
accuracy, macro F1, NLL and the mean over questions of W1 between the subgroup's mean predicted
distribution and its human answer shares. Then per metric: worst subgroup, range, and each
subgroup's gap to the whole sample.
"""
from __future__ import annotations

import collections
import math
import re
from typing import Sequence

import numpy as np

from surveylm_jax.eval import metrics, task_metrics

_HIGHER_IS_BETTER = {"accuracy": True, "macro_f1": True, "nll": False, "w1_normalized": False}


_COMPARISONS = (">=", "<=", "=")


def parse_subgroup(spec: str) -> tuple[str, str, str]:
  """'field=value', 'field>=N' or 'field<=N' -> (field, comparison, value)."""
  for op in _COMPARISONS:
    if op in spec:
      field, value = spec.split(op, 1)
      if field.strip() and value.strip():
        if op != "=" and _number(value) is None:
          raise ValueError(f"subgroup {spec!r}: {op} needs a number")
        return field.strip(), op, value.strip()
  raise ValueError(f"subgroup {spec!r} must be 'field=value' or 'field>=N' / 'field<=N' "
                   "(e.g. 'rural resident=yes', '您的年龄>=65')")


def _number(value):
  try:
    return float(str(value).strip())
  except ValueError:
    return None


def _holds(profile: dict, field: str, op: str, value: str) -> bool:
  have = profile.get(field)
  if have is None:
    return False
  if op == "=":
    return str(have) == value
  x = _number(have)
  return x is not None and (x >= float(value) if op == ">=" else x <= float(value))


def subgroup_tags(profile: dict, conditions: Sequence[str], columns: Sequence[str]) -> list[str]:
  """The subgroup names a respondent belongs to ('field=value', 'field>=N', ...)."""
  tags = []
  for spec in conditions:
    field, op, value = parse_subgroup(spec)
    if _holds(profile, field, op, value):
      tags.append(f"{field}{op}{value}")
  for column in columns:
    if profile.get(column) is not None:
      tag = f"{column}={profile[column]}"
      if tag not in tags:
        tags.append(tag)
  return tags


# ----------------------------------------------------------------------------------------------
# Subgroups from the data: the paper's rural / oldest / lowest-income groups wherever the profile
# fields exist (English or Chinese field names), and every field with few values.
# ----------------------------------------------------------------------------------------------

_RURAL_FIELDS = ("rural", "urban", "residence", "农村", "城乡", "户籍状态", "户口", "居住地区")
_RURAL_VALUES = ("rural", "农村", "乡村", "农业户口", "open country")
_NOT_RURAL = ("非", "non", "not ", "urban")   # 非农业户口 (non-agricultural hukou) is not rural
_AGE_FIELDS = ("age", "年龄")
_INCOME_FIELDS = ("income", "收入")
_LOWEST_WORDS = ("under", "less than", "below", "以下", "以内", "不到")
OLDEST_AGE = 65          # numeric ages: the oldest group is this age and over
LOWEST_INCOME_SHARE = 0.2  # numeric incomes: the lowest fifth


def _field_like(field: str, words) -> bool:
  f = field.casefold()
  return any(w in f for w in words)


def _first_number(text: str):
  m = re.search(r"\d[\d,]*(?:\.\d+)?", str(text))
  return float(m.group(0).replace(",", "")) if m else None


def _band_rank(text: str) -> float:
  """Where a band sits on its scale: 'under $20,000' / '5万以下' first, else by its first number."""
  t = str(text).casefold()
  if any(w in t for w in _LOWEST_WORDS):
    return -math.inf
  n = _first_number(t)
  return math.inf if n is None else n


def _paper_groups(field: str, values: list) -> list[str]:
  numeric = [x for x in (_number(v) for v in values) if x is not None]
  all_numeric = len(numeric) == len(values)
  if _field_like(field, _RURAL_FIELDS):
    rural = sorted({str(v) for v in values if any(w in str(v).casefold() for w in _RURAL_VALUES)
                    and not any(n in str(v).casefold() for n in _NOT_RURAL)})
    if not rural and "rural" in field.casefold():
      rural = sorted({str(v) for v in values if str(v).casefold() in ("yes", "是", "true", "1")})
    return [f"{field}={v}" for v in rural]
  if _field_like(field, _AGE_FIELDS) and values:
    if all_numeric:
      return [f"{field}>={OLDEST_AGE}"] if max(numeric) >= OLDEST_AGE else []
    bands = sorted({str(v) for v in values}, key=_band_rank)
    return [f"{field}={bands[-1]}"] if _band_rank(bands[-1]) < math.inf else []
  if _field_like(field, _INCOME_FIELDS) and values:
    if all_numeric:
      return [f"{field}<={float(np.quantile(numeric, LOWEST_INCOME_SHARE)):g}"]
    bands = sorted({str(v) for v in values}, key=_band_rank)
    return [f"{field}={bands[0]}"] if _band_rank(bands[0]) < math.inf else []
  return []


def default_subgroups(profiles: Sequence[dict], max_values: int = 8) -> tuple[list[str], list[str]]:
  """(conditions, columns) found in the data: the paper's groups where their fields exist, and
  every field with 2..max_values distinct values (one subgroup per value; numbers: 2..3)."""
  values = collections.defaultdict(list)
  for p in profiles:
    for field, v in p.items():
      if v is not None and not isinstance(v, (list, tuple, dict)):
        values[field].append(v)
  conditions, columns = [], []
  for field, vs in values.items():
    conditions.extend(_paper_groups(field, vs))
    distinct = {str(v) for v in vs}
    numeric = all(_number(v) is not None for v in distinct)
    # Few values make a column of subgroups; a number with many values (an age) does not.
    if 2 <= len(distinct) <= (3 if numeric else max_values):
      columns.append(field)
  return conditions, columns


def resolve_subgroups(profiles, conditions: Sequence[str], columns: Sequence[str]):
  """Config values, with 'auto' (alone) in either replaced by what `default_subgroups` finds."""
  found = default_subgroups(profiles) if "auto" in (*conditions, *columns) else ([], [])
  conditions = found[0] if tuple(conditions) == ("auto",) else list(conditions)
  columns = found[1] if tuple(columns) == ("auto",) else list(columns)
  return conditions, columns


def _subset_metrics(idx, option_texts, targets, probs, question_ids, ordinal) -> dict:
  out = task_metrics.survey_response_metrics([option_texts[i] for i in idx], [targets[i] for i in idx],
                                             [probs[i] for i in idx])
  w1s = []
  by_q = collections.defaultdict(list)
  for i in idx:
    if probs[i] is not None and (ordinal is None or ordinal[i]):
      by_q[question_ids[i]].append(i)
  for members in by_q.values():
    k = len(option_texts[members[0]])
    human = np.bincount([targets[i] for i in members], minlength=k) / len(members)
    predicted = np.mean([probs[i] for i in members], axis=0)
    w1s.append(metrics.ordinal_wasserstein(predicted, human, normalize=True))
  return {"n": len(idx), "accuracy": out["accuracy"], "macro_f1": out["macro_f1"], "nll": out["nll"],
          "w1_normalized": float(np.mean(w1s)) if w1s else float("nan")}


def fairness_metrics(tags: Sequence[Sequence[str]], option_texts, targets, probs, question_ids,
                     min_records: int = 20, ordinal: Sequence[bool] | None = None) -> dict:
  """Metrics per subgroup (those with >= min_records records), worst subgroup, range and gaps.

  Records are averaged by position per question, so `option_texts`, `targets` and `probs` must be
  in each question's canonical order; W1 is over questions with `ordinal[i]` True (all if None).
  """
  overall = _subset_metrics(range(len(targets)), option_texts, targets, probs, question_ids, ordinal)
  members = collections.defaultdict(list)
  for i, ts in enumerate(tags):
    for t in ts:
      members[t].append(i)
  groups, too_small = {}, {}
  for name in sorted(members):
    if len(members[name]) < min_records:
      too_small[name] = len(members[name])
      continue
    groups[name] = _subset_metrics(members[name], option_texts, targets, probs, question_ids, ordinal)
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
