"""Option scoring: the model's probability of each option letter at the answer position.

One forward pass per prompt replaces generate-then-parse: at the last prompt token (the start of
the assistant turn) we read p(letter) for every option, summing the token variants of a letter
("A" and " A"), renormalise over the options and keep the total mass that fell on option letters
(low mass says the model wanted to write something else).

Prefix reuse: prompts that share a prefix (one respondent's background asked many questions, one
group profile asked many questions) are packed into rows where the shared prefix appears once and
each prompt's own suffix follows it as a segment that reads the prefix and itself only
(`prefix_segment_ids` of the model), with positions continuing from the prefix's end: every
suffix gets exactly the logits of a plain forward pass over its whole prompt, and the prefix is
computed once per row instead of once per prompt. Groups are given by the caller as
`prefix_keys` (any hashable per prompt, None = no sharing); within a group the prefix is the
longest common *token* prefix, so it is exact whatever the tokenizer does at text boundaries.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import time
from typing import Callable, Hashable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from surveylm_jax.data.prefix_packing import common_prefix_length
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
def _score_packed(model, params, ids, mask, segments, prefix_segments, positions, reads,
                  cand_ids, cand_valid):
  """Shared-prefix packed rows [R, L]; reads [R, P] index each question's last token."""
  logits = model.apply({"params": params}, ids, attention_mask=mask, segment_ids=segments,
                       prefix_segment_ids=prefix_segments, position_ids=positions,
                       logit_positions=reads)
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


@dataclasses.dataclass
class _Group:
  prefix: list
  rows: list          # [(prompt index, suffix tokens)]


def _make_groups(prompt_ids, prefix_keys):
  by_key = collections.OrderedDict()
  for i, key in enumerate(prefix_keys):
    by_key.setdefault(("__alone__", i) if key is None else ("key", key), []).append(i)
  groups = []
  for members in by_key.values():
    seqs = [prompt_ids[i] for i in members]
    # Every member keeps >= 1 own token: the answer is read at its last token.
    n = min(common_prefix_length(seqs), min(len(s) for s in seqs) - 1)
    if n < 1:  # nothing shared: each prompt is its own group, all but its last token as prefix
      groups.extend(_Group(list(prompt_ids[i][:-1]), [(i, list(prompt_ids[i][-1:]))]) for i in members)
      continue
    groups.append(_Group(list(seqs[0][:n]), [(i, list(prompt_ids[i][n:])) for i in members]))
  return groups


def score_options(model: Transformer, params, prompt_ids: Sequence[Sequence[int]],
                  option_ids: Sequence[Sequence[Sequence[int]]], *,
                  prefix_keys: Optional[Sequence[Optional[Hashable]]] = None,
                  batch_size: int = 16, length_step: int = 16, pack_length: int = 512,
                  pack_rows: int = 4, progress: Optional[Callable[[int, int], None]] = None) -> list[OptionScores]:
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
    pack_length: with prefix keys, tokens per packed row: each shared prefix appears once per row,
      followed by its questions; a group that overflows a row repeats its prefix in the next.
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
  if prefix_keys is None or all(k is None for k in prefix_keys):
    order = sorted(range(n), key=lambda i: len(prompt_ids[i]))
    for start in range(0, n, batch_size):
      idx = order[start:start + batch_size]
      rows = _pow2(len(idx), batch_size)
      ids, mask, last = _pad_rows([prompt_ids[i] for i in idx], rows,
                                  _bucket(max(len(prompt_ids[i]) for i in idx), length_step))
      cand_ids, cand_valid = _candidates([option_ids[i] for i in idx], rows)
      out = np.asarray(_score_full(model, params, ids, mask, last, cand_ids, cand_valid))
      for r, i in enumerate(idx):
        results[i] = _to_scores(out[r], len(option_ids[i]))
      done += len(idx)
      if progress:
        progress(done, n)
    return results

  rows = _pack_groups(_make_groups(prompt_ids, prefix_keys), pack_length)
  length = _bucket(max(r.length for r in rows), length_step)
  for start in range(0, len(rows), pack_rows):
    batch = rows[start:start + pack_rows]
    done += _score_rows(model, params, batch, option_ids, results, _pow2(len(batch), pack_rows),
                        length)
    if progress:
      progress(done, n)
  return results


@dataclasses.dataclass
class _Row:
  """One packed row: blocks of (prefix, questions), each question reading the prefix before it."""
  ids: list = dataclasses.field(default_factory=list)
  segments: list = dataclasses.field(default_factory=list)
  prefix_segments: list = dataclasses.field(default_factory=list)
  positions: list = dataclasses.field(default_factory=list)
  reads: list = dataclasses.field(default_factory=list)     # [(token index, prompt index)]

  @property
  def length(self) -> int:
    return len(self.ids)

  def add(self, tokens, position0: int, prefix_segment: int) -> int:
    segment = (self.segments[-1] if self.segments else 0) + 1
    self.ids.extend(tokens)
    self.segments.extend([segment] * len(tokens))
    self.prefix_segments.extend([prefix_segment] * len(tokens))
    self.positions.extend(range(position0, position0 + len(tokens)))
    return segment


def _pack_groups(groups, pack_length: int) -> list:
  """Streams groups into rows of at most `pack_length` tokens (longer only when one prefix and one
  question alone exceed it). A group that does not fit in the rest of a row continues in the next
  row with its prefix repeated, so rows stay nearly full."""
  rows, row = [], _Row()
  for group in groups:
    pending = list(group.rows)
    while pending:
      need = len(group.prefix) + len(pending[0][1])
      if row.length and row.length + need > pack_length:
        rows.append(row)
        row = _Row()
      prefix_segment = row.add(group.prefix, 0, 0)
      while pending and (row.length + len(pending[0][1]) <= pack_length or
                         row.segments[-1] == prefix_segment):
        i, suffix = pending.pop(0)
        row.add(suffix, len(group.prefix), prefix_segment)
        row.reads.append((row.length - 1, i))
  if row.length:
    rows.append(row)
  return rows


def _score_rows(model, params, batch, option_ids, results, rows: int, length: int) -> int:
  """Scores a batch of packed rows, padded to `rows` x `length`."""
  reads = _pow2(max(len(r.reads) for r in batch), 1 << 30)
  arrays = {k: np.zeros((rows, length), np.int32)
            for k in ("ids", "mask", "segments", "prefix_segments", "positions")}
  read_at = np.zeros((rows, reads), np.int32)
  prompts = []
  for b, row in enumerate(batch):
    n = row.length
    arrays["ids"][b, :n] = row.ids
    arrays["mask"][b, :n] = 1
    arrays["segments"][b, :n] = row.segments
    arrays["prefix_segments"][b, :n] = row.prefix_segments
    arrays["positions"][b, :n] = row.positions
    for j, (at, i) in enumerate(row.reads):
      read_at[b, j] = at
    prompts.append([i for _, i in row.reads] + [None] * (reads - len(row.reads)))
  prompts += [[None] * reads] * (rows - len(batch))
  flat = [p for row_prompts in prompts for p in row_prompts]
  cand_ids, cand_valid = _candidates([option_ids[i] if i is not None else [(0,)] for i in flat],
                                     rows * reads)
  out = np.asarray(_score_packed(model, params, arrays["ids"], arrays["mask"], arrays["segments"],
                                 arrays["prefix_segments"], arrays["positions"], read_at,
                                 cand_ids, cand_valid)).reshape(rows * reads, -1)
  for r, i in enumerate(flat):
    if i is not None:
      results[i] = _to_scores(out[r], len(option_ids[i]))
  return sum(len(r.reads) for r in batch)


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
