"""Train/test split by respondent: deterministic, and whole demographic profiles stay together.

Profiles (the tuple of a respondent's profile fields) are put in a seeded random order and moved
to test until the test side holds at least `test_fraction` of respondents. So nobody is in both
splits, and respondents who look the same to a model never straddle the split.
"""
from __future__ import annotations

import collections

import numpy as np


def profile_of(demographics: dict, fields) -> tuple:
  return tuple("<missing>" if demographics.get(f) is None else demographics[f] for f in fields)


def split_by_profile(respondents, fields, test_fraction: float, seed: int) -> dict[str, str]:
  """respondent_id -> 'train' | 'test'."""
  by_profile = collections.defaultdict(list)
  for r in respondents:
    by_profile[profile_of(r.demographics, fields)].append(r.respondent_id)
  profiles = sorted(by_profile)  # a fixed order before the seeded permutation: same seed, same split
  order = np.random.default_rng(seed).permutation(len(profiles))
  target, in_test, assignment = test_fraction * len(respondents), 0, {}
  for i in order:
    side = "test" if in_test < target else "train"
    for rid in by_profile[profiles[i]]:
      assignment[rid] = side
    in_test += len(by_profile[profiles[i]]) if side == "test" else 0
  return assignment
