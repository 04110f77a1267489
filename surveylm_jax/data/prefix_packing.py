"""Shared-prefix packing: a respondent's background is packed once for all of their questions.

Survey records repeat one respondent's background in front of every question (GSS task 4: a
~150-token prefix before a ~35-token question and answer). Records whose prompt text before the
question is identical form a group; a group is tokenized through the chat template record by
record, its members' longest common token prefix is cut out once, and rows are filled with blocks
[prefix | member | member | ...] where each member is its own segment that also reads the prefix
(`prefix_segment_ids`) with positions continuing from the prefix's end. Every member then sees
exactly the context it has unpacked, and gradients through the prefix are the sum of the
members' gradients, as when the prefix is repeated; only the repeated compute is gone.

Rows are filled in stream order: a group that does not fit in the rest of a row continues in the
next row with its prefix repeated, so rows stay nearly full. The iterator state (next group,
next member, the open row's blocks, counts) restores exactly. Group order is shuffled by seed,
groups are split across processes, members keep their file order within a group.
"""
from __future__ import annotations

import collections

import grain
import numpy as np

from surveylm_jax.data.chat_format import ChatTemplateTokenizer
from surveylm_jax.data.packing import COUNT_KEYS, assemble_blocks

GROUP_COUNT_KEYS = COUNT_KEYS + ("groups", "prefix_tokens", "shared_tokens_saved")


def prefix_key(record) -> str | None:
  """Records whose prompt text before the question is identical share a prefix: the instruction up
  to the end of the last block before it (background / group block, interview history, answers in
  context: the reader's cut spans); None = no sharing. Keying on the whole run of blocks matters
  for answers in context: a respondent's records that show the same context answers share
  background and context, and the one showing another context is keyed apart instead of cutting
  every record's shared prefix back to the background."""
  if record.cut_spans:
    return record.instruction[:max(end for _, end in record.cut_spans)]
  return None


def group_by_prefix(records) -> list[list[int]]:
  """Indices of `records` grouped by `prefix_key`, groups in order of first appearance; a record
  without a key is a group of its own."""
  groups: dict = collections.OrderedDict()
  for i, record in enumerate(records):
    key = prefix_key(record)
    groups.setdefault(("alone", i) if key is None else ("key", key), []).append(i)
  return list(groups.values())


def common_prefix_length(seqs) -> int:
  """Length of the longest token prefix shared by all sequences."""
  seqs = [np.asarray(q) for q in seqs]
  n = min(len(q) for q in seqs)
  first = seqs[0]
  for q in seqs[1:]:
    diff = np.nonzero(first[:n] != q[:n])[0]
    n = int(diff[0]) if len(diff) else n
  return n


class GroupTokenizer:
  """Callable [records of one group] -> {'prefix': ids, 'members': [examples]} (members as
  `ChatTemplateTokenizer` examples without the prefix), plus the group's drop/truncation counts."""

  def __init__(self, tokenizer, max_len: int, group_answers: str = "text", catalog=None):
    self.encode = ChatTemplateTokenizer(tokenizer, max_len, group_answers, catalog)

  def __call__(self, records) -> dict:
    examples = [self.encode(r) for r in records]
    kept = [e for e in examples if e is not None]
    out = {"prefix": np.zeros(0, np.int32), "members": kept, "dropped": len(examples) - len(kept)}
    if len(kept) < 2:
      return out
    # The prefix must end before every member's first trained token and answer slot (and leave
    # each member at least one token), so no loss term moves into the prefix.
    limit = min(min(int(np.argmax(e["loss_mask"])) if e["loss_mask"].any() else len(e["input_ids"]),
                    int(e.get("option_position", len(e["input_ids"]))),
                    len(e["input_ids"]) - 1) for e in kept)
    n = min(common_prefix_length([e["input_ids"] for e in kept]), limit)
    if n < 1:
      return out
    out["prefix"] = kept[0]["input_ids"][:n]
    out["members"] = [_drop_front(e, n) for e in kept]
    return out


def _drop_front(example: dict, n: int) -> dict:
  out = dict(example)
  out["input_ids"], out["loss_mask"] = example["input_ids"][n:], example["loss_mask"][n:]
  if "option_position" in example:
    out["option_position"] = np.int32(example["option_position"] - n)
  return out


class PrefixPackedIterDataset(grain.IterDataset):
  """Packs `parent` (a MapDataset of `GroupTokenizer` outputs) into rows of `seq_len` tokens."""

  def __init__(self, parent: grain.MapDataset, seq_len: int):
    super().__init__()
    self._groups, self.seq_len = parent, seq_len

  def __iter__(self):
    return _PrefixPackedIterator(self._groups, self.seq_len)


class _PrefixPackedIterator(grain.DatasetIterator):

  def __init__(self, groups, seq_len):
    super().__init__()
    self._groups, self._seq_len = groups, seq_len
    self._next_group, self._next_member = 0, 0
    self._blocks: list = []        # open row: [(group index, [member indices])]
    self._used = 0                 # tokens in the open row
    self._cache: dict = {}         # tokenized groups of the open row and the current group
    self.counts = collections.Counter({k: 0 for k in GROUP_COUNT_KEYS})

  def _group(self, index: int) -> dict:
    if index not in self._cache:
      self._cache[index] = self._groups[index]
    return self._cache[index]

  def _emit(self) -> dict:
    blocks = []
    for gi, members in self._blocks:
      group = self._group(gi)
      blocks.append((group["prefix"] if len(group["prefix"]) else None,
                     [group["members"][m] for m in members]))
    row = assemble_blocks(blocks, self._seq_len, self.counts)
    self.counts["rows"] += 1
    self.counts["slots"] += self._seq_len
    self.counts["tokens"] += self._used
    self._blocks, self._used = [], 0
    self._cache = {gi: g for gi, g in self._cache.items() if gi == self._next_group}
    return row

  def __next__(self) -> dict:
    while self._next_group < len(self._groups):
      gi, m = self._next_group, self._next_member
      group = self._group(gi)
      if m == 0:
        self.counts["groups"] += 1
        self.counts["dropped"] += group["dropped"]
      if m >= len(group["members"]):
        self._next_group, self._next_member = gi + 1, 0
        continue
      prefix_len, n = len(group["prefix"]), len(group["members"][m]["input_ids"])
      if prefix_len + n > self._seq_len:
        raise ValueError(f"group {gi} member {m}: {prefix_len + n} tokens > seq_len {self._seq_len}")
      open_here = bool(self._blocks) and self._blocks[-1][0] == gi
      if self._used + n + (0 if open_here else prefix_len) > self._seq_len:
        if m == 0:  # the group's first member comes back as a new group on restore: undo its count
          self.counts["groups"] -= 1
          self.counts["dropped"] -= group["dropped"]
        return self._emit()
      if not open_here:  # a new block pays for its prefix once
        self._blocks.append((gi, []))
        self._used += prefix_len
        self.counts["prefix_tokens"] += prefix_len
        self.counts["shared_tokens_saved"] -= prefix_len
      self._blocks[-1][1].append(m)
      self._used += n
      self.counts["examples"] += 1
      self.counts["truncated"] += int(group["members"][m]["truncated"])
      self.counts["shared_tokens_saved"] += prefix_len
      self._next_member = m + 1
    if self._blocks:
      return self._emit()
    raise StopIteration

  def get_state(self) -> dict:
    return {"next_group": self._next_group, "next_member": self._next_member,
            "blocks": [[gi, list(ms)] for gi, ms in self._blocks], "used": self._used,
            "counts": dict(self.counts)}

  def set_state(self, state: dict) -> None:
    self._next_group, self._next_member = int(state["next_group"]), int(state["next_member"])
    self._blocks = [(int(gi), [int(m) for m in ms]) for gi, ms in state["blocks"]]
    self._used = int(state["used"])
    self._cache = {}
    self.counts = collections.Counter({k: 0 for k in GROUP_COUNT_KEYS})
    self.counts.update({k: int(v) for k, v in state["counts"].items()})
