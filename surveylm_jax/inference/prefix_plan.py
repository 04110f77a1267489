"""Which tokens of a set of prompts to run once, and which once per prompt (option scoring).

Survey prompts share text at two levels: every prompt of an evaluation starts with the same
system turn and instruction (the root), and one respondent's (or one group profile's) prompts
share the background after it (the group prefix); only the question and its options differ
(the suffix). A `Plan` runs the root once, each group prefix once reading the root's keys and
values, and packs each group's suffixes into rows that read the root and the group prefix as
context -- the fewest tokens an exact forward pass of every prompt can compute.

Groups are given by the caller as keys (any hashable per prompt, None = shares nothing but the
root); within a group the prefix is the longest common *token* prefix, so it is exact whatever
the tokenizer does at text boundaries. Every prompt keeps at least one token of its own: its
answer is read at its last token.
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Hashable, Optional, Sequence

from surveylm_jax.data.prefix_packing import common_prefix_length


@dataclasses.dataclass(frozen=True)
class Suffix:
  prompt: int             # index of the prompt in the caller's list
  tokens: tuple           # the prompt's tokens after the root and its group prefix


@dataclasses.dataclass
class Group:
  prefix: list            # tokens after the root shared by every member (may be empty)
  rows: list              # [[Suffix, ...], ...]: the members packed into rows

  @property
  def suffixes(self):
    return [s for row in self.rows for s in row]


@dataclasses.dataclass
class Plan:
  root: list              # tokens every prompt starts with
  groups: list

  def token_counts(self) -> dict:
    """Tokens the plan computes, and what one pass per whole prompt would have computed."""
    prefix = sum(len(g.prefix) for g in self.groups)
    suffix = sum(len(s.tokens) for g in self.groups for s in g.suffixes)
    prompts = sum(len(g.suffixes) for g in self.groups)
    whole = sum((len(self.root) + len(g.prefix)) * len(g.suffixes) for g in self.groups) + suffix
    return {"prompts": prompts, "groups": len(self.groups), "root": len(self.root),
            "group_prefix": prefix, "suffix": suffix,
            "computed": len(self.root) + prefix + suffix, "whole_prompts": whole}


def make_plan(prompt_ids: Sequence[Sequence[int]], prefix_keys: Sequence[Optional[Hashable]],
              pack_length: int) -> Plan:
  """Root, groups and packed suffix rows for `prompt_ids` (each >= 2 tokens).

  Rows hold at most `pack_length` suffix tokens (one suffix alone may be longer). Prompts with
  no key, keys held by one prompt only, and groups that share nothing beyond the root form one
  group with an empty prefix.
  """
  if not prompt_ids:
    return Plan([], [])
  root_length = min(common_prefix_length(prompt_ids), min(len(p) for p in prompt_ids) - 1)
  by_key = collections.OrderedDict()
  for i, key in enumerate(prefix_keys):
    by_key.setdefault(("alone",) if key is None else ("key", key), []).append(i)
  shared_only_root = by_key.pop(("alone",), [])
  groups = []
  for members in by_key.values():
    if len(members) == 1:   # a prefix of its own would only add a pass
      shared_only_root.extend(members)
      continue
    seqs = [prompt_ids[i] for i in members]
    shared = min(common_prefix_length(seqs), min(len(s) for s in seqs) - 1)
    if shared <= root_length:
      shared_only_root.extend(members)
      continue
    groups.append(_group(list(seqs[0][root_length:shared]), members, prompt_ids, shared,
                         pack_length))
  if shared_only_root:
    groups.append(_group([], sorted(shared_only_root), prompt_ids, root_length, pack_length))
  return Plan(list(prompt_ids[0][:root_length]), groups)


def _group(prefix, members, prompt_ids, shared: int, pack_length: int) -> Group:
  """Packs the members' suffixes into as few rows as fit `pack_length`, longest first into the
  least-filled row, so rows come out nearly equal in length (rows are padded to the longest
  of their batch)."""
  suffixes = [Suffix(i, tuple(prompt_ids[i][shared:])) for i in members]
  total = sum(len(s.tokens) for s in suffixes)
  rows = [[] for _ in range(max(1, -(-total // pack_length)))]
  used = [0] * len(rows)
  for suffix in sorted(suffixes, key=lambda s: -len(s.tokens)):
    r = min(range(len(rows)), key=used.__getitem__)
    if used[r] and used[r] + len(suffix.tokens) > pack_length:
      rows.append([])
      used.append(0)
      r = len(rows) - 1
    rows[r].append(suffix)
    used[r] += len(suffix.tokens)
  return Group(prefix, [sorted(row, key=lambda s: s.prompt) for row in rows if row])
