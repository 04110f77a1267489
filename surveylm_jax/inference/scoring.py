"""Option scoring: the model's probability of each option letter at the answer position.

One forward pass per prompt replaces generate-then-parse: at the last prompt token (the start of
the assistant turn) we read p(letter) for every option, summing the token variants of a letter
("A" and " A"), renormalise over the options and keep the total mass that fell on option letters
(low mass says the model wanted to write something else).

Prefix reuse (`prefix_keys`): the tokens every prompt starts with run once, each group's shared
prefix (one respondent's background asked many questions, one group profile asked many
questions) runs once reading them, and the groups' question suffixes are packed into rows that
read both as a key/value context (`inference.prefix_plan`, `models.KVContext`). Every suffix
gets exactly the logits of a plain forward pass over its whole prompt.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Callable, Hashable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from surveylm_jax.inference import placement, prefix_plan
from surveylm_jax.models.transformer import Transformer

LETTER_VARIANTS = ("{}", " {}")   # "A" right after the assistant header, or " A" after a space


@dataclasses.dataclass(frozen=True)
class OptionScores:
  """Scores of one prompt's options, in the order the options were given."""
  probs: np.ndarray          # [K] renormalised over the options (sums to 1)
  option_mass: float         # total probability on option-letter tokens before renormalising
  log_probs: np.ndarray      # [K] log p(option letter) under the full vocabulary

  @property
  def predicted_index(self) -> int:
    return int(np.argmax(self.probs))


def letter_token_ids(tokenizer, letters: Sequence[str], variants=LETTER_VARIANTS) -> list[tuple[int, ...]]:
  """Per letter, the ids of its single-token spellings ("A", " A"); errors if a letter has none."""
  out = []
  for letter in letters:
    ids = []
    for form in variants:
      encoded = tokenizer.encode(form.format(letter), add_special_tokens=False)
      if len(encoded) == 1 and encoded[0] not in ids:
        ids.append(int(encoded[0]))
    if not ids:
      raise ValueError(f"option letter {letter!r} has no single-token spelling among "
                       f"{[v.format(letter) for v in variants]} in this tokenizer")
    out.append(tuple(ids))
  return out


def _bucket(n: int, step: int) -> int:
  return max(step, -(-n // step) * step)


def _pow2(n: int, cap: int) -> int:
  b = 1
  while b < n:
    b *= 2
  return min(b, max(cap, n))


def _option_log_probs(logits, cand_ids, cand_valid):
  """log p(option) from the logits [B, V] at the answer position = logsumexp over the option's
  valid letter-token variants; [B, K]."""
  logp = jax.nn.log_softmax(logits, axis=-1)
  picked = jnp.take_along_axis(logp, cand_ids.reshape(cand_ids.shape[0], -1), axis=1)
  picked = picked.reshape(cand_ids.shape)
  picked = jnp.where(cand_valid, picked, -jnp.inf)
  return jax.nn.logsumexp(picked, axis=-1)


@functools.partial(jax.jit, static_argnames=("model",))
def _score_full(model, params, ids, mask, last, cand_ids, cand_valid):
  """Plain path: right-padded whole prompts, one forward pass."""
  # The LM head runs at the answer position only.
  logits = model.apply({"params": params}, ids, attention_mask=mask,
                       logit_positions=last[:, None])[:, 0]
  return _option_log_probs(logits, cand_ids, cand_valid)


@functools.partial(jax.jit, static_argnames=("model",))
def _context_pass(model, params, ids, mask, positions, context):
  """Keys and values of prefix rows [G, L], each reading `context` (batch 1, or None) first;
  returns the context its rows' suffixes read: `context` followed by the rows' own tokens."""
  if context is not None:
    context = context.rows(jnp.zeros((ids.shape[0],), jnp.int32))
  _, own = model.apply({"params": params}, ids, attention_mask=mask, position_ids=positions,
                       context=context, return_residual=True, return_kv=True)
  return own if context is None else context.extend(own)


@functools.partial(jax.jit, static_argnames=("model",))
def _score_suffix_rows(model, params, ids, mask, segments, positions, reads, context, row_group,
                       cand_ids, cand_valid):
  """Packed suffix rows [R, L] reading `context` row `row_group[r]`; reads [R, P] index each
  prompt's last token."""
  context = None if context is None else context.rows(row_group)
  logits = model.apply({"params": params}, ids, attention_mask=mask, segment_ids=segments,
                       position_ids=positions, context=context, logit_positions=reads)
  r, p = reads.shape
  return _option_log_probs(logits.reshape(r * p, -1), cand_ids, cand_valid).reshape(r, p, -1)


def _candidates(option_ids_rows, rows: int):
  """Pads per-row option variants to dense [rows, K, V] ids and a validity mask."""
  k = max(len(r) for r in option_ids_rows)
  v = max(len(o) for r in option_ids_rows for o in r)
  ids = np.zeros((rows, k, v), np.int32)
  valid = np.zeros((rows, k, v), bool)
  for i, options in enumerate(option_ids_rows):
    for j, variants in enumerate(options):
      ids[i, j, :len(variants)] = variants
      valid[i, j, :len(variants)] = True
  return ids, valid


def _pad_rows(seqs, rows: int, length: int):
  ids = np.zeros((rows, length), np.int32)
  mask = np.zeros((rows, length), np.int32)
  last = np.zeros((rows,), np.int32)
  for i, s in enumerate(seqs):
    ids[i, :len(s)] = s
    mask[i, :len(s)] = 1
    last[i] = len(s) - 1
  return ids, mask, last


def _to_scores(log_probs: np.ndarray, k: int) -> OptionScores:
  log_probs = np.asarray(log_probs[:k], np.float64)
  mass_each = np.exp(log_probs)
  mass = float(mass_each.sum())
  if mass > 0:
    probs = mass_each / mass
  else:  # every option letter underflowed: renormalise in log space instead
    probs = np.exp(log_probs - log_probs.max())
    probs /= probs.sum()
  return OptionScores(probs=probs, option_mass=mass, log_probs=log_probs)


def score_options(model: Transformer, params, prompt_ids: Sequence[Sequence[int]],
                  option_ids: Sequence[Sequence[Sequence[int]]], *,
                  prefix_keys: Optional[Sequence[Optional[Hashable]]] = None,
                  batch_size: int = 16, length_step: int = 16, pack_length: int = 256,
                  pack_rows: int = 8, progress: Optional[Callable[[int, int], None]] = None) -> list[OptionScores]:
  """Scores every prompt's options.

  Args:
    prompt_ids: token ids of each full prompt, ending where the answer starts (chat template with
      the generation prompt).
    option_ids: per prompt, per option, the token ids whose probabilities count for that option
      (see `letter_token_ids`).
    prefix_keys: per prompt, a key for prefix sharing (e.g. the prompt text before the question);
      None for all = one plain forward pass per prompt, no cache.
    batch_size: prompts per forward pass (plain path, without prefix keys).
    length_step: sequence lengths are padded up to a multiple of this, so few shapes compile.
    pack_length: with prefix keys, question tokens per packed row (one group's questions, read
      after the keys and values of the root and the group's prefix).
    pack_rows: packed rows per forward pass.
    progress: called as progress(done, total) after every batch.
  Returns:
    One OptionScores per prompt, in input order.
  """
  n = len(prompt_ids)
  if len(option_ids) != n:
    raise ValueError(f"{n} prompts but {len(option_ids)} option lists")
  for i, (p, o) in enumerate(zip(prompt_ids, option_ids)):
    if len(p) < 2:
      raise ValueError(f"prompt {i} has {len(p)} tokens; a scored prompt needs at least 2")
    if not o or any(not v for v in o):
      raise ValueError(f"prompt {i}: every option needs at least one token id, got {o}")
  if prefix_keys is not None and len(prefix_keys) != n:
    raise ValueError(f"{n} prompts but {len(prefix_keys)} prefix keys")
  results: list = [None] * n
  done = 0
  put = placement.of(params)   # where batches go and how results come back (one device or a mesh)
  with put.context():
    if prefix_keys is None or all(k is None for k in prefix_keys):
      order = sorted(range(n), key=lambda i: len(prompt_ids[i]))
      for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        rows = _pow2(len(idx), batch_size)
        ids, mask, last = _pad_rows([prompt_ids[i] for i in idx], rows,
                                    _bucket(max(len(prompt_ids[i]) for i in idx), length_step))
        cand_ids, cand_valid = _candidates([option_ids[i] for i in idx], rows)
        out = put.get(_score_full(model, params, *map(put.put, (ids, mask, last, cand_ids, cand_valid))))
        for r, i in enumerate(idx):
          results[i] = _to_scores(out[r], len(option_ids[i]))
        done += len(idx)
        if progress:
          progress(done, n)
      return results

    plan = prefix_plan.make_plan(prompt_ids, prefix_keys, pack_length)
    _score_plan(model, params, plan, option_ids, results, length_step=length_step,
                pack_rows=pack_rows, progress=progress, total=n, put=put)
    return results


def _score_plan(model, params, plan: prefix_plan.Plan, option_ids, results, *, length_step: int,
                pack_rows: int, progress, total: int, put: placement.Placement):
  """Runs `plan`: the root once, then chunks of groups -- their prefixes in one pass, their
  suffix rows `pack_rows` at a time. Chunks keep only a few groups' keys and values alive."""
  root = None
  if plan.root:
    width = _bucket(len(plan.root), length_step)
    ids, mask, _ = _pad_rows([plan.root], 1, width)
    root = _context_pass(model, params, put.put(ids), put.put(mask),
                         put.put(np.arange(width, dtype=np.int32)[None]), None)
  done, chunk, chunk_rows = 0, [], 0
  for g, group in enumerate(plan.groups):
    chunk.append(group)
    chunk_rows += len(group.rows)
    if chunk_rows >= pack_rows or g == len(plan.groups) - 1:
      done += _score_chunk(model, params, plan, chunk, root, option_ids, results, length_step,
                           pack_rows, put)
      chunk, chunk_rows = [], 0
      if progress:
        progress(done, total)
  return done


def _score_chunk(model, params, plan, chunk, root, option_ids, results, length_step, pack_rows, put):
  start = len(plan.root)
  # Without group prefixes the chunk is the one group that shares only the root: its rows
  # all read root row 0.
  context = root
  if any(g.prefix for g in chunk):
    width = _bucket(max(len(g.prefix) for g in chunk), length_step)
    ids, mask, _ = _pad_rows([g.prefix for g in chunk], len(chunk), width)
    positions = np.broadcast_to(np.arange(start, start + width, dtype=np.int32), ids.shape)
    context = _context_pass(model, params, put.put(ids), put.put(mask), put.put(positions), root)
  rows = [(c, row) for c, g in enumerate(chunk) for row in g.rows]
  rows.sort(key=lambda r: -sum(len(s.tokens) for s in r[1]))   # similar lengths share a batch
  # Batches of nearly equal size (not full batches and a small remainder): a pass over a
  # handful of rows uses the cores poorly.
  batches = -(-len(rows) // pack_rows)
  size = -(-len(rows) // batches)
  starts = [start + len(g.prefix) for g in chunk]
  done = 0
  for b in range(0, len(rows), size):
    done += _score_rows(model, params, rows[b:b + size], starts, context, option_ids, results,
                        length_step, put)
  return done


def _score_rows(model, params, batch, starts, context, option_ids, results,
                length_step: int, put: placement.Placement) -> int:
  """Scores a batch of (chunk group, suffix row); `starts[c]`: the first position after group
  c's prefix."""
  rows = len(batch)
  length = _bucket(max(sum(len(s.tokens) for s in row) for _, row in batch), length_step)
  reads = _pow2(max(len(row) for _, row in batch), 1 << 30)
  arrays = {k: np.zeros((rows, length), np.int32)
            for k in ("ids", "mask", "segments", "positions")}
  read_at = np.zeros((rows, reads), np.int32)
  row_group = np.zeros((rows,), np.int32)
  prompts = [[None] * reads for _ in range(rows)]
  for r, (c, row) in enumerate(batch):
    row_group[r] = c
    at = 0
    for j, suffix in enumerate(row):
      n = len(suffix.tokens)
      arrays["ids"][r, at:at + n] = suffix.tokens
      arrays["mask"][r, at:at + n] = 1
      arrays["segments"][r, at:at + n] = j + 1
      arrays["positions"][r, at:at + n] = np.arange(starts[c], starts[c] + n)
      at += n
      read_at[r, j] = at - 1
      prompts[r][j] = suffix.prompt
  flat = [p for row_prompts in prompts for p in row_prompts]
  cand_ids, cand_valid = _candidates([option_ids[i] if i is not None else [(0,)] for i in flat],
                                     rows * reads)
  ids, mask, segments, positions, read_at, row_group, cand_ids, cand_valid = map(put.put, (
      arrays["ids"], arrays["mask"], arrays["segments"], arrays["positions"], read_at, row_group,
      cand_ids, cand_valid))
  out = put.get(_score_suffix_rows(model, params, ids, mask, segments, positions, read_at, context,
                                   row_group, cand_ids, cand_valid)).reshape(rows * reads, -1)
  for r, i in enumerate(flat):
    if i is not None:
      results[i] = _to_scores(out[r], len(option_ids[i]))
  return sum(len(row) for _, row in batch)


class ProgressLine:
  """A one-line progress report (records done, rate, time left), printed at most every `every` s."""

  def __init__(self, label: str, every: float = 10.0, printer=print):
    self.label, self.every, self.printer = label, every, printer
    self.start = self.last = time.time()

  def __call__(self, done: int, total: int):
    now = time.time()
    if now - self.last < self.every and done < total:
      return
    self.last = now
    rate = done / max(now - self.start, 1e-9)
    left = (total - done) / rate if rate > 0 else float("inf")
    self.printer(f"[{self.label}] {done}/{total} records, {rate:.1f}/s, ~{left:.0f}s left", flush=True)
