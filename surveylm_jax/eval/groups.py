"""Group-level evaluation: predicted vs human answer distributions of demographic groups.

A group prediction comes either from aggregating the option distributions predicted for each test
respondent of the group, or from answering a group-prompt record directly. Distances use the
question's canonical option order (question catalog; see metrics.py). Each group also gets a noise floor: how far a
*resample* of the human answers at the group's own size n lands from the human distribution, which
is the best any predictor can be expected to do. "Gap closed" puts a model between a baseline
(uniform or the training marginal) and that floor:
    gap_closed = (d_baseline - d_model) / (d_baseline - d_floor)
1 = as close as sampling noise allows, 0 = no better than the baseline, < 0 = worse.
"""
from __future__ import annotations

import collections
from typing import Mapping, Sequence

import numpy as np

from surveylm_jax.data.answers import answer_key
from surveylm_jax.eval import metrics

DISTANCES = ("w1", "w1_normalized", "js", "tv")


_FIELD_PREFIXES = ("your ", "您的", "你的")


def _field_key(name) -> str:
  """A profile field as groups name it: prompts say "your sex: female" / "您的性别: 女" where the
  group profile says "sex" / "性别"."""
  key = answer_key(name)
  for prefix in _FIELD_PREFIXES:
    if key.startswith(prefix) and len(key) > len(prefix):
      return key[len(prefix):]
  return key


def group_matches(profile: Mapping, group: Mapping) -> bool:
  """True when a respondent's profile has every (field, value) of the group."""
  fields = {_field_key(k): v for k, v in profile.items()}
  return all(str(fields.get(_field_key(k))) == str(v) for k, v in group.items())


def question_key(record) -> str:
  """What makes two records the same question: the converter's `question_id`, else the task-3
  topic, else the question text."""
  for value in (record.extra.get("question_id"), record.extra.get("topic"), getattr(record, "topic", ""),
                getattr(record, "question", "")):
    if value:
      return answer_key(value)
  return ""


def member_profile(record) -> dict:
  """A respondent's profile: the converter's `profile`, else the parsed background lines."""
  return record.extra.get("profile") or dict(getattr(record, "background", {}) or {})


def same_question(group, member) -> bool:
  g, m = question_key(group), question_key(member)
  # A task-3 group prompt may carry only its question sentence, which names the member's topic.
  return g == m or (group.task == "task3" and bool(m) and m in answer_key(group.question))


def aggregate_members(group_records, members, member_probs, group_options=None, member_options=None):
  """Per group record: the mean predicted distribution of the test respondents in the group who
  answered the same question, and how many there were (None, 0 when there are none).

  Members are matched by task, question (`question_key`) and group profile (individual records
  carry `profile` in `extra`, else their parsed background; group records carry `group`). Each
  member's distribution is put into `group_options[g]` (default: the group record's listed
  options; pass the canonical order) by answer identity, so shuffled option orders aggregate
  correctly. `member_options[i]` names the options member i's distribution is over (default its
  own listed options; task-3 members give the stance labels).
  """
  by_task = collections.defaultdict(list)
  for i, r in enumerate(members):
    if member_probs[i] is not None:
      by_task[r.task].append(i)
  out = []
  for gi, g in enumerate(group_records):
    texts = list(group_options[gi]) if group_options is not None else g.option_texts()
    keys = [answer_key(t) for t in texts]
    rows = []
    for i in by_task.get(g.task, ()):
      r = members[i]
      if not same_question(g, r):
        continue
      if not group_matches(member_profile(r), g.group):
        continue
      member_keys = [answer_key(t) for t in (member_options[i] if member_options is not None
                                             else r.option_texts())]
      if sorted(member_keys) != sorted(keys):
        raise ValueError(f"{r.source}: options {member_keys} differ from those of the group "
                         f"record {g.source} ({keys}) for the same question")
      p = np.asarray(member_probs[i], np.float64)
      rows.append(p[[member_keys.index(k) for k in keys]])
    out.append((np.mean(rows, axis=0), len(rows)) if rows else (None, 0))
  return out


def bootstrap_noise_floor(human, n: int, draws: int = 200, seed: int = 0, ordinal: bool = True) -> dict:
  """Mean distance between the human distribution and multinomial resamples of size n (no W1
  for a nominal question)."""
  human = metrics.check_distribution(human, "human distribution")
  if n is None or n < 1:
    raise ValueError(f"the noise floor needs the group size n >= 1, got {n}")
  rng = np.random.default_rng(seed)
  samples = rng.multinomial(n, human / human.sum(), size=draws) / n
  tiled = np.broadcast_to(human, samples.shape)
  k = len(human)
  out = {"js": float(np.mean(metrics.jensen_shannon(samples, tiled))),
         "tv": float(np.mean(metrics.total_variation(samples, tiled)))}
  if ordinal:
    w1 = metrics.ordinal_wasserstein(samples, tiled)
    out.update(w1=float(np.mean(w1)), w1_normalized=float(np.mean(w1)) / max(k - 1, 1))
  return out


def gap_closed(d_baseline: float, d_model: float, d_floor: float) -> float:
  """(d_baseline - d_model) / (d_baseline - d_floor); NaN when the baseline is already at the floor."""
  denominator = d_baseline - d_floor
  if not np.isfinite(denominator) or denominator <= 1e-12:
    return float("nan")
  return (d_baseline - d_model) / denominator


def evaluate_groups(entries: Sequence[dict], draws: int = 200, seed: int = 0) -> dict:
  """Distances for every predictor on every group, the noise floor, and gap-closed summaries.

  Each entry: {"id", "question_id", "group", "n", "human": [K], "predictions": {name: [K] | None},
  "ordinal": bool (default True), "question": text (optional, kept in the row)}, every distribution
  in the question's canonical order. Nominal questions get JS, TV and KL only; W1 summaries and gap
  closed are over ordinal groups.
  Predictors named "uniform" and "marginal" serve as the gap-closed baselines when present.
  Returns {"per_group": [...], "summary": {predictor: {distance: mean, gap_closed_vs_*: mean,
  "groups": count}}, "noise_floor": {distance: mean}}.
  """
  per_group, floors = [], collections.defaultdict(list)
  values = collections.defaultdict(lambda: collections.defaultdict(list))
  for e in entries:
    human = metrics.check_distribution(e["human"], f"group {e['id']}: human distribution")
    ordinal = bool(e.get("ordinal", True))
    row = {"id": e["id"], "question_id": e.get("question_id"), "group": e.get("group"), "n": e.get("n"),
           "ordinal": ordinal, "human": human.tolist(), "predictions": {}, "distances": {}}
    floor = bootstrap_noise_floor(human, e["n"], draws, seed, ordinal) if e.get("n") else None
    if e.get("question"):  # the question's words, for plots and readers (the id is a column code)
      row["question"] = e["question"]
    row["noise_floor"] = floor
    if floor:
      for d in DISTANCES:
        if d in floor:
          floors[d].append(floor[d])
    for name, pred in e["predictions"].items():
      if pred is None:
        continue
      pred = metrics.check_distribution(pred, f"group {e['id']}: prediction {name!r}")
      dist = metrics.distribution_metrics(pred, human, ordinal)
      row["predictions"][name] = pred.tolist()
      row["distances"][name] = dist
      for d, v in dist.items():
        values[name][d].append(v)
      values[name]["groups"].append(1)
    if floor and ordinal:
      for base in ("uniform", "marginal"):
        if base not in row["distances"]:
          continue
        for name, dist in row["distances"].items():
          if name == base:
            continue
          values[name][f"gap_closed_vs_{base}"].append(
              gap_closed(row["distances"][base]["w1"], dist["w1"], floor["w1"]))
    per_group.append(row)
  summary = {}
  for name, ds in values.items():
    summary[name] = {d: float(np.nanmean(v)) if np.any(np.isfinite(v)) else float("nan")
                     for d, v in ds.items() if d != "groups"}
    summary[name]["groups"] = len(ds["groups"])
    summary[name]["ordinal_groups"] = len(ds["w1"])
  # Gap closed of the means: steadier than the mean of per-group ratios, whose denominator can be
  # tiny for groups where the baseline is already near the floor. Over groups with all three.
  for base in ("uniform", "marginal"):
    for name in summary:
      if name == base:
        continue
      rows = [r for r in per_group if r["noise_floor"] and r["ordinal"] and base in r["distances"]
              and name in r["distances"]]
      if rows:
        summary[name][f"gap_closed_vs_{base}_of_means"] = gap_closed(
            float(np.mean([r["distances"][base]["w1"] for r in rows])),
            float(np.mean([r["distances"][name]["w1"] for r in rows])),
            float(np.mean([r["noise_floor"]["w1"] for r in rows])))
  return {"per_group": per_group, "summary": summary,
          "noise_floor": {d: float(np.mean(v)) for d, v in floors.items()}}
