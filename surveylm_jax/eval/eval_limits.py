"""`eval.max_respondents` / `eval.max_records`: caps on every kind of record an evaluation scores.

  max_respondents = N  task-4 individual records and each of tasks 1-3 keep all records of N
                       respondents drawn at random (seeded); group prompts keep the groups that
                       have a drawn member (the groups the aggregation can speak to); the
                       position-bias records come from the kept individual records.
  max_records = M      then each kind keeps at most its first M records (individual, group
                       prompts, each of tasks 1-3), and position bias scores at most M copies.

`LimitedRecords.report()` states, per kind, how many records were kept of how many.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from surveylm_jax.cli import ConfigError
from surveylm_jax.eval import groups as groups_lib
from surveylm_jax.eval.position_bias import option_orders


def sample_respondents(records, count: int, seed: int):
  """All records of `count` respondents drawn at random (seeded), in file order, and a note."""
  ids = list(dict.fromkeys(r.respondent_id for r in records))
  if any(i is None for i in ids):
    raise ConfigError(f"config.eval.max_respondents needs a respondent id on every record; "
                     f"{records[0].source.path} has records without one")
  if count >= len(ids):
    return records, None
  keep = set(np.random.default_rng(seed).choice(len(ids), size=count, replace=False).tolist())
  chosen = {ids[i] for i in keep}
  kept = [r for r in records if r.respondent_id in chosen]
  return kept, f"{count} of {len(ids)} test respondents sampled (seed {seed}): {len(kept)} of {len(records)} records"


def _has_member(group, members) -> bool:
  return any(m.task == group.task and groups_lib.same_question(group, m)
             and groups_lib.group_matches(groups_lib.member_profile(m), group.group) for m in members)


@dataclasses.dataclass
class LimitedRecords:
  individual: list
  group: list
  generated: list
  coverage: dict
  sampling_note: str | None = None

  def note_position_bias(self, count: int):
    self.coverage["position_bias_records"] = count

  def report(self) -> dict:
    return self.coverage


def apply_limits(individual, group, generated, max_respondents: int, max_records: int,
                 seed: int) -> LimitedRecords:
  coverage = {"max_respondents": max_respondents, "max_records": max_records}
  before = {"individual": len(individual), "group": len(group)}
  note = None
  by_task = {}
  for r in generated:
    by_task.setdefault(r.task, []).append(r)
  for task, recs in by_task.items():
    before[task] = len(recs)
  if max_respondents > 0:
    if individual:
      individual, note = sample_respondents(individual, max_respondents, seed)
    by_task = {t: sample_respondents(recs, max_respondents, seed)[0] for t, recs in by_task.items()}
    members = list(individual) + [r for recs in by_task.values() for r in recs]
    group = [g for g in group if _has_member(g, members)]
  if max_records > 0:
    individual, group = individual[:max_records], group[:max_records]
    by_task = {t: recs[:max_records] for t, recs in by_task.items()}
  after = {"individual": len(individual), "group": len(group), **{t: len(v) for t, v in by_task.items()}}
  coverage["kept"] = {k: f"{after[k]} of {before[k]}" for k in before}
  kept_generated = [r for recs in by_task.values() for r in recs]
  return LimitedRecords(individual, group, kept_generated, coverage, note)


def position_bias_count(configured: int, records, max_records: int) -> int:
  """Records to score under every option order: at most `configured`, at most the kept
  individual records, and (with max_records) no more than max_records copies in all."""
  count, copies = 0, 0
  for r in records[:max(configured, 0)]:
    copies += len(option_orders(len(r.options)))
    if max_records > 0 and copies > max_records:
      break
    count += 1
  return count
