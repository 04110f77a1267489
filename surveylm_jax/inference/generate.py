"""Batched autoregressive generation with a KV cache.

Prompts are [batch, prompt_len] with an attention mask. The decode loop wants them left-padded;
right-padded batches (a Hugging Face tokenizer's default) are left-aligned first, so both give
the same text. One jitted function runs the prefill and a `lax.while_loop` of single-token decode
steps over a cache sized prompt_len + max_new_tokens, so a call compiles once per (shapes,
sampling settings) and never per token. The loop ends early when every row has produced an
end-of-sequence token.
"""
from __future__ import annotations

import functools
from typing import Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from surveylm_jax.inference import placement
from surveylm_jax.models.transformer import Transformer, init_cache


def _filter_logits(logits, top_k: int, top_p: float):
  """Masks logits outside the top-k set and outside the smallest top-p nucleus."""
  neg = jnp.finfo(logits.dtype).min
  if top_k and top_k > 0:
    kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
    logits = jnp.where(logits < kth, neg, logits)
  if top_p < 1.0:
    sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    # Keep a token while the mass strictly before it is below top_p (always keeps the first).
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    keep = mass_before < top_p
    cutoff = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
    logits = jnp.where(logits < cutoff, neg, logits)
  return logits


def _next_token(logits, rng, temperature: float, top_k: int, top_p: float):
  if temperature <= 0.0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = _filter_logits(logits / temperature, top_k, top_p)
  return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("model", "max_new_tokens", "temperature", "top_k",
                                             "top_p", "eos_ids", "pad_id"))
def _generate(model: Transformer, params, input_ids, attention_mask, rng, *, max_new_tokens: int,
              temperature: float, top_k: int, top_p: float, eos_ids: tuple, pad_id: int):
  batch, prompt_len = input_ids.shape
  total = prompt_len + max_new_tokens
  cache = init_cache(model, batch, total)
  kv_mask = jnp.concatenate(
      [attention_mask.astype(jnp.int32), jnp.zeros((batch, max_new_tokens), jnp.int32)], axis=1)
  positions = jnp.maximum(jnp.cumsum(attention_mask.astype(jnp.int32), axis=-1) - 1, 0)
  # Prompts are left-aligned, so every row's next token follows the last column: the LM head
  # runs there only ([batch, 1, vocab], not [batch, prompt_len, vocab] -- 10 GB at 7B x 8 x 2048).
  last_column = jnp.full((batch, 1), prompt_len - 1, jnp.int32)
  logits, mutated = model.apply({"params": params, "cache": cache}, input_ids,
                                attention_mask=kv_mask, position_ids=positions, decode=True,
                                logit_positions=last_column, mutable=["cache"])
  eos = jnp.asarray(eos_ids if eos_ids else (-1,), jnp.int32)

  def cond(state):
    step, _, _, _, _, done, _, _ = state
    return (step < max_new_tokens) & ~jnp.all(done)

  def body(state):
    step, cache, last_logits, kv_mask, last_pos, done, out, rng = state
    rng, sub = jax.random.split(rng)
    token = _next_token(last_logits, sub, temperature, top_k, top_p)
    token = jnp.where(done, pad_id, token)
    out = out.at[:, step].set(token)
    done = done | jnp.isin(token, eos)
    kv_mask = kv_mask.at[:, prompt_len + step].set(1)
    pos = last_pos + 1
    logits, mutated = model.apply({"params": params, "cache": cache}, token[:, None],
                                  attention_mask=kv_mask, position_ids=pos[:, None], decode=True,
                                  mutable=["cache"])
    return (step + 1, mutated["cache"], logits[:, -1], kv_mask, pos, done, out, rng)

  out = jnp.full((batch, max_new_tokens), pad_id, jnp.int32)
  state = (jnp.array(0, jnp.int32), mutated["cache"], logits[:, -1], kv_mask, positions[:, -1],
           jnp.zeros((batch,), bool), out, rng)
  state = jax.lax.while_loop(cond, body, state)
  return state[6]


def is_left_padded(attention_mask) -> bool:
  """True when no row has a real token after a pad (padding, if any, sits only on the left)."""
  mask = np.asarray(attention_mask) != 0
  return not np.any(mask[:, :-1] & ~mask[:, 1:])


def left_align(input_ids, attention_mask):
  """Moves each row's real tokens to its right end, keeping their order; pads go to the left.

  The decode loop appends new tokens after the last prompt column and reads the last column's
  logits, so a right-padded row would continue from its pad tokens instead of its prompt. Rows
  already left-padded come back unchanged.
  """
  ids, mask = np.asarray(input_ids), np.asarray(attention_mask)
  if is_left_padded(mask):
    return ids, mask
  # A stable sort on "is real" puts pads first and leaves the real tokens in their order.
  order = np.argsort(mask != 0, axis=1, kind="stable")
  return np.take_along_axis(ids, order, axis=1), np.take_along_axis(mask, order, axis=1)


def generate(model: Transformer, params, input_ids, attention_mask=None, *,
             max_new_tokens: int = 16, temperature: float = 0.0, top_k: int = 0,
             top_p: float = 1.0, seed: int = 0,
             eos_token_id: Optional[Union[int, Sequence[int]]] = None,
             pad_token_id: Optional[int] = None, return_prompt: bool = True):
  """Generates up to `max_new_tokens` per row.

  Args:
    input_ids / attention_mask: prompts [batch, prompt_len]; mask 1 = real token. Padding may
      be on either side (right-padded rows are left-aligned first, `left_align`).
    temperature: 0 → greedy; > 0 → sampling, optionally restricted by `top_k` / `top_p`.
    eos_token_id: defaults to the model config's EOS ids; a row stops after emitting one.
  Returns:
    int32 numpy array: [batch, prompt_len + max_new_tokens] (prompt then new tokens) or just the
    new tokens when `return_prompt=False`. Positions after a row's EOS hold `pad_token_id`.
    The prompt part is the left-aligned prompt, so prompt and new tokens join without a gap.
  """
  cfg = model.config
  input_ids = np.asarray(input_ids, np.int32)
  if input_ids.ndim != 2:
    raise ValueError(f"input_ids must be [batch, prompt_len], got shape {input_ids.shape}")
  if attention_mask is None:
    attention_mask = np.ones_like(input_ids)
  attention_mask = np.asarray(attention_mask, np.int32)
  if attention_mask.shape != input_ids.shape:
    raise ValueError(f"attention_mask shape {attention_mask.shape} != input_ids shape "
                     f"{input_ids.shape}")
  empty = np.flatnonzero(~np.any(attention_mask != 0, axis=1))
  if empty.size:
    raise ValueError(f"rows {empty.tolist()} of attention_mask have no real token to continue")
  input_ids, attention_mask = left_align(input_ids, attention_mask)
  if max_new_tokens < 1:
    raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
  if not 0.0 < top_p <= 1.0:
    raise ValueError(f"top_p must be in (0, 1], got {top_p}")
  if eos_token_id is None:
    eos_ids = tuple(cfg.eos_token_ids)
  elif isinstance(eos_token_id, int):
    eos_ids = (eos_token_id,)
  else:
    eos_ids = tuple(int(e) for e in eos_token_id)
  if pad_token_id is None:
    pad_token_id = cfg.pad_token_id if cfg.pad_token_id is not None else (
        eos_ids[0] if eos_ids else 0)
  put = placement.of(params)   # rows over the mesh's batch axes when params are on a mesh
  rng = put.put(np.asarray(jax.random.PRNGKey(seed)), batch=False)
  with put.context():
    new = _generate(model, params, put.put(input_ids), put.put(attention_mask),
                    rng, max_new_tokens=int(max_new_tokens),
                    temperature=float(temperature), top_k=int(top_k), top_p=float(top_p),
                    eos_ids=eos_ids, pad_id=int(pad_token_id))
  new = put.get(new)
  if not return_prompt:
    return new
  return np.concatenate([input_ids, new], axis=1)
