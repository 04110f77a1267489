"""Option scoring: the model's probability of each option letter at the answer position.

One forward pass per prompt replaces generate-then-parse: at the last prompt token (the start of
the assistant turn) we read p(letter) for every option, summing the token variants of a letter
("A" and " A"), renormalise over the options and keep the total mass that fell on option letters
(low mass says the model wanted to write something else).

Prefix reuse: prompts that share a prefix (one respondent's background asked many questions, one
group profile asked many questions) are scored by running the shared prefix once into a KV cache
and continuing every prompt's own suffix from a copy of that cache. Groups are given by the
caller as `prefix_keys` (any hashable per prompt, None = no sharing); within a group the prefix is
the longest common *token* prefix, so it is exact whatever the tokenizer does at text
boundaries. Many groups run side by side: the prefix batch holds one row per group and each
suffix row gathers its group's cache row.

Layout in the cache (per chunk of groups): slots [0, Lp) hold the right-padded prefixes, slots
[Lp, Lp + Ls) the suffixes; padded slots are masked out of attention and positions count only
real tokens, so logits equal those of a plain forward pass over the whole prompt.
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

from surveylm_jax.models.transformer import Transformer, init_cache

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


def _head(model: Transformer, params, hidden):
  """Logits for a few hidden states [B, E] -> [B, V] (the LM head, only where it is needed)."""
  if model.config.tie_word_embeddings:
    kernel = params["embed_tokens"]["embedding"].T
  else:
    kernel = params["lm_head"]["kernel"]
  return jnp.einsum("be,ev->bv", hidden.astype(kernel.dtype), kernel,
                    preferred_element_type=jnp.float32)


def _option_log_probs(model, params, last_hidden, cand_ids, cand_valid):
  """log p(option) = logsumexp over its valid letter-token variants; [B, K]."""
  logp = jax.nn.log_softmax(_head(model, params, last_hidden), axis=-1)
  picked = jnp.take_along_axis(logp, cand_ids.reshape(cand_ids.shape[0], -1), axis=1)
  picked = picked.reshape(cand_ids.shape)
  picked = jnp.where(cand_valid, picked, -jnp.inf)
  return jax.nn.logsumexp(picked, axis=-1)


@functools.partial(jax.jit, static_argnames=("model",))
def _score_full(model, params, ids, mask, last, cand_ids, cand_valid):
  """Plain path: right-padded whole prompts, one forward pass."""
  hidden = model.apply({"params": params}, ids, attention_mask=mask, return_hidden=True)
  last_hidden = hidden[jnp.arange(ids.shape[0]), last]
  return _option_log_probs(model, params, last_hidden, cand_ids, cand_valid)


@functools.partial(jax.jit, static_argnames=("model", "suffix_slots"))
def _prefill_prefixes(model, params, ids, mask, *, suffix_slots: int):
  """Runs right-padded prefixes [G, Lp] into a cache of Lp + suffix_slots slots."""
  g, lp = ids.shape
  cache = init_cache(model, g, lp + suffix_slots)
  kv_mask = jnp.concatenate([mask, jnp.zeros((g, suffix_slots), mask.dtype)], axis=1)
  positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
  _, mutated = model.apply({"params": params, "cache": cache}, ids, attention_mask=kv_mask,
                           position_ids=positions, decode=True, return_hidden=True,
                           mutable=["cache"])
  return mutated["cache"]


@functools.partial(jax.jit, static_argnames=("model",))
def _score_suffixes(model, params, prefix_cache, prefix_mask, group_of_row, ids, mask, last,
                    cand_ids, cand_valid):
  """Continues each suffix row [B, Ls] from its group's prefix cache row."""
  slots = prefix_cache_slots(prefix_cache)
  lp = prefix_mask.shape[1]
  cache = jax.tree_util.tree_map(
      lambda x: jnp.take(x, group_of_row, axis=1) if x.ndim >= 2 else x, prefix_cache)
  row_prefix_mask = jnp.take(prefix_mask, group_of_row, axis=0)
  b, ls = ids.shape
  kv_mask = jnp.concatenate(
      [row_prefix_mask, mask, jnp.zeros((b, slots - lp - ls), mask.dtype)], axis=1)
  positions = row_prefix_mask.sum(axis=1, keepdims=True) + jnp.arange(ls)[None, :]
  hidden, _ = model.apply({"params": params, "cache": cache}, ids, attention_mask=kv_mask,
                          position_ids=positions, decode=True, return_hidden=True,
                          mutable=["cache"])
  last_hidden = hidden[jnp.arange(b), last]
  return _option_log_probs(model, params, last_hidden, cand_ids, cand_valid)


def prefix_cache_slots(cache) -> int:
  """Number of slots of a cache (the key array is [layers, batch, slots, kv_heads, head_dim])."""
  return max(x.shape[2] for x in jax.tree_util.tree_leaves(cache) if x.ndim == 5)


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


def _common_prefix_len(seqs) -> int:
  first = seqs[0]
  n = min(len(s) for s in seqs)
  for s in seqs[1:]:
    i = 0
    while i < n and s[i] == first[i]:
      i += 1
    n = i
  return n


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
    n = min(_common_prefix_len(seqs), min(len(s) for s in seqs) - 1)
    if n < 1:  # nothing shared: each prompt is its own group, all but its last token as prefix
      groups.extend(_Group(list(prompt_ids[i][:-1]), [(i, list(prompt_ids[i][-1:]))]) for i in members)
      continue
    groups.append(_Group(list(seqs[0][:n]), [(i, list(prompt_ids[i][n:])) for i in members]))
  return groups


def score_options(model: Transformer, params, prompt_ids: Sequence[Sequence[int]],
                  option_ids: Sequence[Sequence[Sequence[int]]], *,
                  prefix_keys: Optional[Sequence[Optional[Hashable]]] = None,
                  batch_size: int = 16, length_step: int = 16,
                  progress: Optional[Callable[[int, int], None]] = None) -> list[OptionScores]:
  """Scores every prompt's options.

  Args:
    prompt_ids: token ids of each full prompt, ending where the answer starts (chat template with
      the generation prompt).
    option_ids: per prompt, per option, the token ids whose probabilities count for that option
      (see `letter_token_ids`).
    prefix_keys: per prompt, a key for prefix sharing (e.g. the prompt text before the question);
      None for all = one plain forward pass per prompt, no cache.
    batch_size: rows per forward pass (and at most this many prefixes per prefill).
    length_step: sequence lengths are padded up to a multiple of this, so few shapes compile.
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

  groups = sorted(_make_groups(prompt_ids, prefix_keys), key=lambda g: len(g.prefix))
  chunk: list = []
  for group in groups + [None]:
    chunk_rows = sum(len(g.rows) for g in chunk)
    if chunk and (group is None or len(chunk) == batch_size or chunk_rows >= 4 * batch_size):
      done += _score_chunk(model, params, chunk, option_ids, results, batch_size, length_step)
      if progress:
        progress(done, n)
      chunk = []
    if group is not None:
      chunk.append(group)
  return results


def _score_chunk(model, params, chunk, option_ids, results, batch_size, length_step) -> int:
  """Prefills the chunk's prefixes once, then scores its rows batch by batch."""
  lp = _bucket(max(len(g.prefix) for g in chunk), length_step)
  g_rows = _pow2(len(chunk), batch_size)
  rows = sorted(((gi, i, suffix) for gi, g in enumerate(chunk) for i, suffix in g.rows),
                key=lambda r: len(r[2]))
  ls_slots = _bucket(max(len(r[2]) for r in rows), length_step)
  p_ids, p_mask, _ = _pad_rows([g.prefix for g in chunk], g_rows, lp)
  cache = _prefill_prefixes(model, params, p_ids, p_mask, suffix_slots=ls_slots)
  p_mask = jnp.asarray(p_mask)
  for start in range(0, len(rows), batch_size):
    batch = rows[start:start + batch_size]
    b = _pow2(len(batch), batch_size)
    ids, mask, last = _pad_rows([r[2] for r in batch], b,
                                _bucket(max(len(r[2]) for r in batch), length_step))
    group_of_row = np.zeros((b,), np.int32)
    group_of_row[:len(batch)] = [r[0] for r in batch]
    cand_ids, cand_valid = _candidates([option_ids[r[1]] for r in batch], b)
    out = np.asarray(_score_suffixes(model, params, cache, p_mask, group_of_row, ids, mask, last,
                                     cand_ids, cand_valid))
    for r, (_, i, _) in enumerate(batch):
      results[i] = _to_scores(out[r], len(option_ids[i]))
  return len(rows)


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
