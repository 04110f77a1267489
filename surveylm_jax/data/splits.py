"""Train / validation / test sides of every cell of converted microdata (codebook `split:`).

Units. A row is one respondent's interview. A *person* is the set of rows sharing the codebook's
`panel_id` (without one, each row is its own person). A *cell* is one row's answer to one question.

Kinds (`split.kinds`, any combination; default [respondent]). Each kind is a test-side predicate:
  respondent  the person is in a stratified seeded sample of `test_fraction` of all persons. Persons
              are ordered by profile stratum (`split.profile`, read off their first row), seeded at
              random within it, and taken by one running fractional accumulator, so every stratum
              gives floor or ceil of test_fraction x its size: the test side looks like the whole.
  profile     the person's whole profile was moved to test: profiles in seeded order until the test
              side holds test_fraction of persons. Nobody who looks alike straddles the split, but
              the test side can miss whole profiles and overshoot the fraction (the report warns).
  wave        the row's year is a test year (`split.wave`: {from_year: Y} or {years: [...]}).
  population  one of the person's rows holds a listed value of `split.population.field`.
  question    the cell's question is held out (`split.questions`, or a seeded question_fraction).
A cell is TEST when every listed predicate fires, TRAIN when none fires, and EXCLUDED otherwise,
counted as cells_excluded_by_mixing_kinds: with [respondent, question], a test person's answers to
training questions and a training person's answers to held-out questions go in no file.

Panels and waves. Person-level kinds keep a person on one side. The wave kind is per row, so a
panel person whose rows straddle the cut would land on both sides: they stay TRAIN with their
pre-cut rows only; the other rows are counted as panel_rows_dropped_at_wave_cut. (With the question
kind alone the same persons answer on both sides by design, to different questions.)

Validation. `validation_fraction` of the persons with TRAIN cells (stratified as for the respondent
kind, from its own seed stream) have those cells marked VALIDATION: written to validation files,
never to a train file. Every choice is a function of the codebook: same codebook, same sides.
"""
from __future__ import annotations

import collections
import dataclasses
import math

import numpy as np

TRAIN, VALIDATION, TEST = "train", "validation", "test"
SIDES = (TRAIN, VALIDATION, TEST)
MISSING_VALUE = "<missing>"
# Seed streams: each choice draws from its own generator, so adding one kind does not move another.
_RESPONDENT_STREAM, _QUESTION_STREAM, _VALIDATION_STREAM = 1, 2, 3
FRACTION_TOLERANCE = 0.05
# A pair of profile values (e.g. female and 18-29) is reported missing from the test side only
# when the achieved fraction would have put at least this many of its persons there: rarer pairs
# miss the test side by chance.
PAIR_EXPECTED_MIN = 3.0


def profile_of(demographics: dict, fields) -> tuple:
  return tuple(MISSING_VALUE if demographics.get(f) is None else demographics[f] for f in fields)


def stratified_sample(units, fraction: float, rng) -> set:
  """units: [(stratum, id)]. Strata in sorted order, ids shuffled within each, then one accumulator
  with a seeded phase takes an id whenever floor(fraction x position + phase) steps up: each
  stratum of size n gives floor or ceil of fraction x n, and the total is within one of the target."""
  by_stratum = collections.defaultdict(list)
  for stratum, uid in units:
    by_stratum[stratum].append(uid)
  order = []
  for stratum in sorted(by_stratum):
    ids = sorted(by_stratum[stratum])
    order += [ids[i] for i in rng.permutation(len(ids))]
  phase = rng.random()
  return {uid for i, uid in enumerate(order)
          if math.floor(fraction * (i + 1) + phase) > math.floor(fraction * i + phase)}


def profile_sample(units, fraction: float, seed: int) -> set:
  """Whole profiles in a seeded order until the chosen side holds `fraction` of the units (the
  converter's behaviour before split kinds: same seed, same choice)."""
  by_profile = collections.defaultdict(list)
  for stratum, uid in units:
    by_profile[stratum].append(uid)
  profiles = sorted(by_profile)  # a fixed order before the seeded permutation
  target, chosen = fraction * len(units), set()
  for i in np.random.default_rng(seed).permutation(len(profiles)):
    if len(chosen) >= target:
      break
    chosen.update(by_profile[profiles[i]])
  return chosen


def held_out_questions(spec, questions) -> tuple:
  """The question kind's held-out columns: as listed, or a seeded share (at least one, and at least
  one question left to train on), in codebook order."""
  if spec.questions or spec.question_fraction is None:
    return tuple(spec.questions)
  columns = [q.column for q in questions]
  k = min(len(columns) - 1, max(1, int(spec.question_fraction * len(columns) + 0.5)))
  picked = np.random.default_rng([spec.seed, _QUESTION_STREAM]).permutation(len(columns))[:k]
  return tuple(columns[i] for i in sorted(picked))


def in_test_wave(spec, year):
  """True / False for a row's year; None when the row has no year."""
  if year is None:
    return None
  if spec.wave_from_year is not None:
    return year >= spec.wave_from_year
  return year in spec.wave_years


@dataclasses.dataclass
class CellSplit:
  sides: dict                 # (respondent_id, question column) -> side; cells in no file are absent
  held_out: tuple             # held-out question columns (question kind), else ()
  strata: dict                # person_id -> profile tuple
  counts: collections.Counter

  def side(self, respondent_id: str, column: str):
    return self.sides.get((respondent_id, column))

  def rows_of(self, side: str, respondents) -> list:
    """The rows with a cell on `side`, each holding only that side's answers: record builders
    given these cannot reach another side's cells."""
    rows = []
    for r in respondents:
      answers = {c: (a if self.sides.get((r.respondent_id, c)) == side else None) for c, a in r.answers.items()}
      if any(a is not None for a in answers.values()):
        rows.append(dataclasses.replace(r, answers=answers))
    return rows


def _persons(respondents) -> dict:
  persons = collections.defaultdict(list)
  for r in respondents:
    persons[r.person_id].append(r)
  return persons


def _first_row(rows):
  """The row a person's profile is read from: their earliest wave (then table order)."""
  return min(rows, key=lambda r: (r.year is None, r.year if r.year is not None else 0, r.row))


def split_cells(codebook, respondents) -> CellSplit:
  spec, kinds = codebook.split, set(codebook.split.kinds)
  counts = collections.Counter()
  persons = _persons(respondents)
  strata = {p: profile_of(_first_row(rows).demographics, spec.profile) for p, rows in persons.items()}
  # Persons who answered nothing would take test places and give no record: sample the others.
  units = [(strata[p], p) for p, rows in persons.items()
           if any(a is not None for r in rows for a in r.answers.values())]
  person_sets = []   # person-level predicates, as the set of persons each fires for
  if "respondent" in kinds:
    person_sets.append(stratified_sample(units, spec.test_fraction,
                                         np.random.default_rng([spec.seed, _RESPONDENT_STREAM])))
  if "profile" in kinds:
    person_sets.append(profile_sample(units, spec.test_fraction, spec.seed))
  if "population" in kinds:
    values = set(spec.population_values)
    # Any row counts: a person who ever held a held-out value must not reach the train side.
    person_sets.append({p for p, rows in persons.items()
                        if any(r.demographics.get(spec.population_field) in values for r in rows)})
  held = set(held_out_questions(spec, codebook.questions)) if "question" in kinds else set()
  sides = {}
  for person, rows in persons.items():
    person_fires = [person in chosen for chosen in person_sets]
    keys = {}
    for r in rows:
      row_fires = list(person_fires)
      if "wave" in kinds:
        wave = in_test_wave(spec, r.year)
        if wave is None:
          counts["rows_without_year_excluded_by_wave"] += 1
          continue
        row_fires.append(wave)
      keys[r.respondent_id] = []
      for q in codebook.questions:
        if r.answers.get(q.column) is None:
          continue
        fires = row_fires + ([q.column in held] if "question" in kinds else [])
        side = TEST if all(fires) else TRAIN if not any(fires) else None
        if side is None:
          counts["cells_excluded_by_mixing_kinds"] += 1
          continue
        sides[(r.respondent_id, q.column)] = side
        keys[r.respondent_id].append((r.respondent_id, q.column))
    person_sides = {sides[k] for row_keys in keys.values() for k in row_keys}
    if "wave" in kinds and {TRAIN, TEST} <= person_sides:
      for r in rows:
        if in_test_wave(spec, r.year):
          counts["panel_rows_dropped_at_wave_cut"] += 1
          counts["panel_cells_dropped_at_wave_cut"] += len(keys[r.respondent_id])
          for k in keys.pop(r.respondent_id):
            del sides[k]
  if spec.validation_fraction > 0:
    trained = [p for p, rows in persons.items()
               if any(sides.get((r.respondent_id, c)) == TRAIN for r in rows for c in r.answers)]
    chosen = stratified_sample([(strata[p], p) for p in trained], spec.validation_fraction,
                               np.random.default_rng([spec.seed, _VALIDATION_STREAM]))
    for p in sorted(chosen):
      for r in persons[p]:
        for c in r.answers:
          if sides.get((r.respondent_id, c)) == TRAIN:
            sides[(r.respondent_id, c)] = VALIDATION
  return CellSplit(sides, tuple(q.column for q in codebook.questions if q.column in held), strata, counts)


def _side_summary(codebook, respondents, cells: CellSplit, side: str) -> dict:
  rows = [r for r in respondents if any(cells.side(r.respondent_id, c) == side for c in r.answers)]
  persons = {r.person_id for r in rows}
  n_cells = sum(1 for s in cells.sides.values() if s == side)
  asked = {c for (_, c), s in cells.sides.items() if s == side}
  summary = {"persons": len(persons), "rows": len(rows), "cells": n_cells,
             "questions": [q.column for q in codebook.questions if q.column in asked],
             "years": sorted({r.year for r in rows if r.year is not None}),
             "strata": len({cells.strata[p] for p in persons})}
  if codebook.split.population_field:
    field = codebook.split.population_field
    summary["population_values"] = sorted({r.demographics[field] for r in rows
                                           if r.demographics.get(field) is not None})
  return summary


def _warnings(codebook, respondents, cells: CellSplit, sides: dict, achieved: float) -> list:
  spec, warnings = codebook.split, []
  for side in (TRAIN, TEST):
    if not sides[side]["cells"]:
      warnings.append(f"the {side} side is empty (kinds {list(spec.kinds)})")
  if VALIDATION in sides and not sides[VALIDATION]["cells"]:
    warnings.append(f"validation_fraction {spec.validation_fraction} chose no person")
  if {"respondent", "profile"} & set(spec.kinds) and abs(achieved - spec.test_fraction) > FRACTION_TOLERANCE:
    warnings.append(f"achieved test fraction {achieved:.3f} of persons is off the requested "
                    f"{spec.test_fraction} by more than {FRACTION_TOLERANCE} (kinds {list(spec.kinds)})")
  if not sides[TEST]["cells"]:
    return warnings
  for field in spec.profile:
    if "population" in spec.kinds and field == spec.population_field:
      continue  # the test side holds only the listed values on purpose
    values = {}
    for r in respondents:
      value = r.demographics.get(field)
      for c in r.answers:
        side = cells.side(r.respondent_id, c)
        if value is not None and side in (TRAIN, TEST):
          values.setdefault(side, set()).add(value)
    lacking = sorted(values.get(TRAIN, set()) - values.get(TEST, set()))
    if lacking:
      warnings.append(f"the test side has no respondent with {field} in {lacking}, which the train "
                      "side has: it does not represent the whole")
  return warnings + _pair_warnings(codebook, respondents, cells, achieved)


def _pair_warnings(codebook, respondents, cells: CellSplit, achieved: float) -> list:
  """Pairs of profile values that the test side lacks although the achieved fraction would have
  given it at least PAIR_EXPECTED_MIN of their persons (one line per pair of fields)."""
  spec = codebook.split
  fields = [f for f in spec.profile
            if not ("population" in spec.kinds and f == spec.population_field)]
  person_sides, person_values = collections.defaultdict(set), {}
  for r in respondents:
    person_values.setdefault(r.person_id, r.demographics)
    person_sides[r.person_id].update(cells.side(r.respondent_id, c) for c in r.answers)
  warnings = []
  for i, first in enumerate(fields):
    for second in fields[i + 1:]:
      everyone, on_test = collections.Counter(), collections.Counter()
      for person, sides in person_sides.items():
        pair = (person_values[person].get(first), person_values[person].get(second))
        if None in pair or not sides & {TRAIN, TEST}:
          continue
        everyone[pair] += 1
        on_test[pair] += TEST in sides
      lacking = sorted(((n * achieved, pair) for pair, n in everyone.items()
                        if not on_test[pair] and n * achieved >= PAIR_EXPECTED_MIN),
                       key=lambda item: (-item[0], item[1]))   # most expected first
      if lacking:
        listed = ", ".join(f"{a}/{b} (~{e:.0f} expected)" for e, (a, b) in lacking[:5])
        more = f" and {len(lacking) - 5} more" if len(lacking) > 5 else ""
        warnings.append(f"the test side has no respondent with {first}/{second} = {listed}{more}: "
                        "it does not represent the whole")
  return warnings


def split_report(codebook, respondents, cells: CellSplit) -> dict:
  """What the split did, per side, with warnings about an unrepresentative or empty test side."""
  spec = codebook.split
  sides = {side: _side_summary(codebook, respondents, cells, side) for side in SIDES
           if side != VALIDATION or spec.validation_fraction > 0}
  answered = {r.person_id for r in respondents if any(a is not None for a in r.answers.values())}
  persons = len(answered)
  unanswered = sum(1 for r in respondents if all(a is None for a in r.answers.values()))
  achieved = sides[TEST]["persons"] / persons if persons else 0.0
  # `persons`: those with at least one answer, whom the achieved fraction is a share of.
  report = {"kinds": list(spec.kinds), "seed": spec.seed, "profile": list(spec.profile),
            "persons": persons, "strata": len({cells.strata[p] for p in answered}),
            "achieved_test_fraction": round(achieved, 4), "sides": sides,
            "cells_excluded_by_mixing_kinds": cells.counts["cells_excluded_by_mixing_kinds"],
            "rows_without_answers": unanswered}
  if {"respondent", "profile"} & set(spec.kinds):
    report["test_fraction"] = spec.test_fraction
  if "question" in spec.kinds:
    report["held_out_questions"] = list(cells.held_out)
  if "wave" in spec.kinds:
    report["wave"] = ({"from_year": spec.wave_from_year} if spec.wave_from_year is not None
                      else {"years": list(spec.wave_years)})
    for key in ("panel_rows_dropped_at_wave_cut", "panel_cells_dropped_at_wave_cut",
                "rows_without_year_excluded_by_wave"):
      report[key] = cells.counts[key]
  if "population" in spec.kinds:
    report["population"] = {"field": spec.population_field, "values": list(spec.population_values)}
  if spec.validation_fraction > 0:
    report["validation_fraction"] = spec.validation_fraction
  if spec.context_answers:
    report["context_answers"] = spec.context_answers
  report["warnings"] = _warnings(codebook, respondents, cells, sides, achieved)
  return report
