"""First-fit packing of tokenized examples into fixed [seq_len] rows, with a restorable state.

Reads a random-access (Map) dataset of examples ({'input_ids', 'loss_mask', 'truncated'} or None
for a dropped one) in index order. Each example goes into the first open row with room; when none
has room and `num_rows` rows are open, the fullest row is emitted. The iterator state is the next
index plus, for each open row, the indices of its examples (re-read on restore), plus the counts:
so saving and restoring resumes at exactly the same element, and the counts stay exact.

Output rows (all int32, length seq_len):
  input_ids      token ids, 0 on padding
  targets        the next token within the same segment (0 at a segment's last token and padding)
  loss_mask      1 where targets[t] is an answer token to learn: loss = CE(logits[t], targets[t])·loss_mask[t]
  segment_ids    1, 2, ... per packed example, 0 on padding
  position_ids   positions restarting at 0 in each segment (continuing after a shared prefix), 0 on padding
  attention_mask 1 on real tokens, 0 on padding
  prefix_segment_ids  the segment of the shared prefix a segment also reads (0 = none; see
                 `prefix_packing`: one respondent's background packed once for many questions)
Answer slots (for option losses and option accuracy), up to MAX_OPTION_SLOTS per row with up to
MAX_OPTIONS options each (padding slots have position -1, padding options come last):
  option_positions [M]     position whose logits predict the answer letter
  option_token_ids [M, K]  token id of each option letter, in the question's order
  option_mask      [M, K]  1 for real options
  option_targets   [M, K]  float32 target distribution over the options
  option_ordinal   [M]     1 when the options are in an ordinal (canonical) order, 0 for nominal
A slot that does not fit these bounds is left out and counted (`option_slots_dropped`).
"""
from __future__ import annotations

import collections

import grain
import numpy as np

ROW_KEYS = ("input_ids", "targets", "loss_mask", "segment_ids", "position_ids", "attention_mask",
            "prefix_segment_ids")
OPTION_KEYS = ("option_positions", "option_token_ids", "option_mask", "option_targets", "option_ordinal")
BATCH_KEYS = ROW_KEYS + OPTION_KEYS
MAX_OPTION_SLOTS = 16
MAX_OPTIONS = 16
COUNT_KEYS = ("examples", "truncated", "dropped", "rows", "tokens", "slots",
              "option_slots", "option_slots_dropped")


def batch_shapes(rows: int, seq_len: int) -> dict:
  """Shape of every batch array, for building shardings before the first batch exists."""
  shapes = {k: (rows, seq_len) for k in ROW_KEYS}
  shapes.update(option_positions=(rows, MAX_OPTION_SLOTS),
                option_token_ids=(rows, MAX_OPTION_SLOTS, MAX_OPTIONS),
                option_mask=(rows, MAX_OPTION_SLOTS, MAX_OPTIONS),
                option_targets=(rows, MAX_OPTION_SLOTS, MAX_OPTIONS),
                option_ordinal=(rows, MAX_OPTION_SLOTS))
  return shapes


def _empty_slots() -> dict:
  return {"option_positions": np.full(MAX_OPTION_SLOTS, -1, np.int32),
          "option_token_ids": np.zeros((MAX_OPTION_SLOTS, MAX_OPTIONS), np.int32),
          "option_mask": np.zeros((MAX_OPTION_SLOTS, MAX_OPTIONS), np.int32),
          "option_targets": np.zeros((MAX_OPTION_SLOTS, MAX_OPTIONS), np.float32),
          "option_ordinal": np.zeros(MAX_OPTION_SLOTS, np.int32)}


def assemble_row(examples, seq_len: int, counts=None) -> dict:
  """One packed row from examples that fit together (`counts` receives slot counts)."""
  return assemble_blocks([(None, [ex]) for ex in examples], seq_len, counts)


def assemble_blocks(blocks, seq_len: int, counts=None) -> dict:
  """One packed row from blocks (shared prefix ids or None, [examples]). A prefix is its own
  segment; each example after it is a segment that also reads the prefix (prefix_segment_ids),
  with positions continuing from the prefix's end, so it sees exactly its unpacked context."""
  row = {k: np.zeros(seq_len, np.int32) for k in ROW_KEYS}
  row.update(_empty_slots())
  at, slot, segment = 0, 0, 0
  for prefix, examples in blocks:
    prefix_segment, offset = 0, 0
    if prefix is not None and len(prefix):
      segment += 1
      n = len(prefix)
      row["input_ids"][at:at + n] = prefix
      row["targets"][at:at + n - 1] = prefix[1:]
      row["segment_ids"][at:at + n] = segment
      row["position_ids"][at:at + n] = np.arange(n, dtype=np.int32)
      row["attention_mask"][at:at + n] = 1
      prefix_segment, offset, at = segment, n, at + n
    for ex in examples:
      segment += 1
      if "option_ids" in ex:
        k = len(ex["option_ids"])
        if slot < MAX_OPTION_SLOTS and k <= MAX_OPTIONS:
          row["option_positions"][slot] = at + int(ex["option_position"])
          row["option_token_ids"][slot, :k] = ex["option_ids"]
          row["option_mask"][slot, :k] = 1
          row["option_targets"][slot, :k] = ex["option_target"]
          row["option_ordinal"][slot] = ex.get("option_ordinal", 1)
          slot += 1
          if counts is not None:
            counts["option_slots"] += 1
        elif counts is not None:
          counts["option_slots_dropped"] += 1
      ids, mask = ex["input_ids"], ex["loss_mask"]
      n = len(ids)
      row["input_ids"][at:at + n] = ids
      row["targets"][at:at + n - 1] = ids[1:]
      row["loss_mask"][at:at + n - 1] = mask[1:]
      row["segment_ids"][at:at + n] = segment
      row["prefix_segment_ids"][at:at + n] = prefix_segment
      row["position_ids"][at:at + n] = offset + np.arange(n, dtype=np.int32)
      row["attention_mask"][at:at + n] = 1
      at += n
  return row


class PackedIterDataset(grain.IterDataset):
  """Packs `parent` (a MapDataset of tokenized examples) into rows of `seq_len` tokens.

  `max_segments=1` gives one example per row (no packing, same outputs and state handling).
  """

  def __init__(self, parent: grain.MapDataset, seq_len: int, num_rows: int = 16,
               max_segments: int | None = None):
    super().__init__()
    self._examples, self.seq_len, self.num_rows = parent, seq_len, num_rows
    self.max_segments = max_segments

  def __iter__(self):
    return _PackedIterator(self._examples, self.seq_len, self.num_rows, self.max_segments)


class _PackedIterator(grain.DatasetIterator):

  def __init__(self, examples, seq_len, num_rows, max_segments):
    super().__init__()
    self._examples, self._seq_len, self._num_rows = examples, seq_len, num_rows
    self._max_segments = max_segments or seq_len
    self._next_index = 0
    self._rows: list[list[int]] = []          # open rows: example indices
    self._lengths: list[int] = []             # tokens used per open row
    self._cache: dict[int, dict] = {}         # examples of open rows, by index
    self.counts = collections.Counter({k: 0 for k in COUNT_KEYS})

  def _emit(self, row_number: int) -> dict:
    indices = self._rows.pop(row_number)
    self.counts["tokens"] += self._lengths.pop(row_number)
    row = assemble_row([self._cache.pop(i) for i in indices], self._seq_len, self.counts)
    self.counts["rows"] += 1
    self.counts["slots"] += self._seq_len
    return row

  def __next__(self) -> dict:
    while self._next_index < len(self._examples):
      index = self._next_index
      example = self._examples[index]
      self._next_index += 1
      if example is None:
        self.counts["dropped"] += 1
        continue
      n = len(example["input_ids"])
      if n > self._seq_len:
        raise ValueError(f"example {index} has {n} tokens > seq_len {self._seq_len}: truncate first")
      self.counts["examples"] += 1
      self.counts["truncated"] += int(example["truncated"])
      self._cache[index] = example
      fits = next((r for r, used in enumerate(self._lengths)
                   if used + n <= self._seq_len and len(self._rows[r]) < self._max_segments), None)
      if fits is not None:
        self._rows[fits].append(index)
        self._lengths[fits] += n
        continue
      self._rows.append([index])
      self._lengths.append(n)
      if len(self._rows) > self._num_rows:  # all open rows were full for it: emit the fullest one
        return self._emit(int(np.argmax(self._lengths[:-1])))
    if self._rows:  # end of data: flush what is open, oldest first
      return self._emit(0)
    raise StopIteration

  def get_state(self) -> dict:
    return {"next_index": self._next_index, "rows": [list(r) for r in self._rows],
            "counts": dict(self.counts)}

  def set_state(self, state: dict) -> None:
    self._next_index = int(state["next_index"])
    self._rows = [list(map(int, r)) for r in state["rows"]]
    self._cache = {i: self._examples[i] for r in self._rows for i in r}
    self._lengths = [sum(len(self._cache[i]["input_ids"]) for i in r) for r in self._rows]
    self.counts = collections.Counter({k: 0 for k in COUNT_KEYS})
    self.counts.update({k: int(v) for k, v in state["counts"].items()})

  def packing_efficiency(self) -> float:
    """Share of row slots holding real tokens, over the rows emitted so far."""
    return self.counts["tokens"] / max(self.counts["slots"], 1) if self.counts["rows"] else 0.0
