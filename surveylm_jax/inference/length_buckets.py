"""Generation over many prompts with a bounded number of compiled programs.

`generate` compiles one program per (batch, prompt_len, max_new_tokens). Padding every batch to
its longest prompt would compile once per distinct length, and a last, smaller batch once more.
Here prompt lengths are padded up to a bucket from a fixed set (every power of two and 1.5 times
it: past the smallest bucket, a batch's longest prompt fills over two thirds of its row) and
every batch has the same number of rows (a short last batch is filled with copies of its rows,
whose outputs are dropped), so one call compiles at most one program per bucket.
`GenerationStats` records the shapes used and every output that hit `max_new_tokens` before an
end-of-sequence token (a cut answer).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import numpy as np

from surveylm_jax.inference.generate import generate


@dataclasses.dataclass
class GenerationStats:
  """Filled by `generate_bucketed` (and `eval.generated_tasks.generate_texts`); pass one in and
  read it afterwards. Calls add up, so use one object per task for per-task numbers."""
  shapes: set = dataclasses.field(default_factory=set)   # (batch, prompt_len, max_new_tokens)
  cut: list = dataclasses.field(default_factory=list)    # per output, in prompt order: no EOS
  prompt_tokens: int = 0     # real prompt tokens
  padded_tokens: int = 0     # tokens the prefill ran on: padding and filler rows included

  @property
  def n_cut(self) -> int:
    return int(sum(self.cut))

  def summary(self) -> dict:
    """A JSON-ready summary for a metrics report."""
    n = len(self.cut)
    return {"outputs": n, "cut_at_max_new_tokens": self.n_cut,
            "cut_share": self.n_cut / n if n else 0.0, "programs": len(self.shapes),
            "shapes": [list(s) for s in sorted(self.shapes)],
            "prompt_padding_share": (1.0 - self.prompt_tokens / self.padded_tokens
                                     if self.padded_tokens else 0.0)}


def bucket_lengths(cap: int, smallest: int = 16) -> tuple[int, ...]:
  """Every power of two and 1.5 times it from `smallest` on, below `cap`, then `cap` itself."""
  if cap < 1:
    raise ValueError(f"cap must be >= 1, got {cap}")
  out, size = [], smallest
  while size < cap:
    out.extend(s for s in (size, size * 3 // 2) if s < cap)
    size *= 2
  out.append(cap)
  return tuple(sorted(set(out)))


def bucket_for(length: int, buckets: Sequence[int]) -> int:
  """The smallest bucket holding `length` tokens; a longer prompt than the last one is an error
  (it does not fit the model's context)."""
  for size in buckets:
    if length <= size:
      return size
  raise ValueError(f"prompt of {length} tokens is longer than the largest length bucket "
                   f"({buckets[-1]}, the model's context unless max_prompt_len says otherwise)")


def plan_batches(lengths: Sequence[int], batch_size: int, buckets: Sequence[int]):
  """[(prompt indices, bucket)]: prompts sorted by length (less padding per batch), cut into
  batches of `batch_size`; each batch takes the bucket of its longest prompt."""
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  order = sorted(range(len(lengths)), key=lambda i: lengths[i])
  plan = []
  for start in range(0, len(order), batch_size):
    idx = order[start:start + batch_size]
    plan.append((idx, bucket_for(max(lengths[i] for i in idx), buckets)))
  return plan


def left_padded(token_rows: Sequence[Sequence[int]], width: int, rows: int, pad_id: int):
  """(input_ids, attention_mask) [rows, width]: each prompt left-padded to `width`; missing rows
  repeat the last prompt (a real prompt ends when it ends, so fillers never prolong the loop)."""
  filled = list(token_rows) + [token_rows[-1]] * (rows - len(token_rows))
  ids = np.full((rows, width), pad_id, np.int32)
  mask = np.zeros((rows, width), np.int32)
  for r, tokens in enumerate(filled):
    if tokens:
      ids[r, width - len(tokens):] = tokens
      mask[r, width - len(tokens):] = 1
  return ids, mask


def reached_eos(new_tokens: np.ndarray, eos_ids: Sequence[int]) -> np.ndarray:
  """Per row, whether an end-of-sequence token came within the generated tokens."""
  return np.isin(new_tokens, np.asarray(tuple(eos_ids), np.int64)).any(axis=1)


def generate_bucketed(model, params, token_rows: Sequence[Sequence[int]], *, batch_size: int,
                      max_new_tokens: int, pad_id: int, max_prompt_len: Optional[int] = None,
                      stats: Optional[GenerationStats] = None,
                      on_batch: Optional[Callable[[int, int], None]] = None) -> list[np.ndarray]:
  """Greedy new tokens (padded with the model's pad id after EOS) for every prompt, in order.

  Args:
    token_rows: prompt token ids, any lengths up to `max_prompt_len` (default: the model's
      max_position_embeddings).
    batch_size: rows per program; fewer prompts than that use one batch of their count.
    stats: gets the shapes, prompt/padding token counts and the cut flag of every output.
    on_batch: called with (prompts done, prompts in all) after each batch (progress lines).
  """
  stats = stats if stats is not None else GenerationStats()
  if not token_rows:
    return []
  cap = max_prompt_len or model.config.max_position_embeddings
  buckets = bucket_lengths(cap)
  rows = min(batch_size, len(token_rows))
  eos_ids = tuple(model.config.eos_token_ids)   # what `generate` stops on when not told
  out, cut, done = [None] * len(token_rows), [False] * len(token_rows), 0
  for idx, width in plan_batches([len(t) for t in token_rows], rows, buckets):
    ids, mask = left_padded([token_rows[i] for i in idx], width, rows, pad_id)
    new = generate(model, params, ids, mask, max_new_tokens=max_new_tokens,
                   return_prompt=False)[:len(idx)]
    for i, row, ended in zip(idx, new, reached_eos(new, eos_ids)):
      out[i], cut[i] = row, not ended
    stats.shapes.add((rows, width, int(max_new_tokens)))
    stats.prompt_tokens += sum(len(token_rows[i]) for i in idx)
    stats.padded_tokens += rows * width
    done += len(idx)
    if on_batch is not None:
      on_batch(done, len(token_rows))
  stats.cut.extend(cut)
  return out
