"""Key/value reuse (`context=`, `return_kv=`): a prompt run in pieces, each piece reading the keys
and values of the pieces before it, gives the logits of one full forward pass.

Tolerance: 1e-4 absolute on logits (float32; the same operations with the keys split across
two concatenated blocks), as in test_model_parity.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from surveylm_jax import models
from tests.models.hf_reference import FAMILIES, make_pair

TOL = 1e-4


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def pair(request):
  _, model, params = make_pair(request.param)
  return request.param, model, params


def _full(model, params, seq):
  return np.asarray(model.apply({"params": params}, jnp.asarray([seq])))[0]


def test_three_pieces_equal_one_pass(pair):
  """Root piece -> middle piece reading the root -> last piece reading both (the scoring tree)."""
  name, model, params = pair
  seq = list(np.random.RandomState(0).randint(3, 160, 19))
  full = _full(model, params, seq)
  cuts = [(0, 6), (6, 13), (13, 19)]
  context, outs = None, []
  for a, b in cuts:
    ids = jnp.asarray([seq[a:b]])
    positions = jnp.arange(a, b)[None]
    logits, kv = model.apply({"params": params}, ids, position_ids=positions, context=context,
                             return_kv=True)
    outs.append(np.asarray(logits)[0])
    assert kv.keys.shape[:3] == (model.config.num_hidden_layers, 1, b - a)
    context = kv if context is None else context.extend(kv)
  diff = np.abs(np.concatenate(outs) - full).max()
  assert diff <= TOL, f"{name}: {diff}"


def test_padded_context_and_packed_questions(pair):
  """Per row: a right-padded prefix of its own length as context, then several questions packed
  as segments after it; each question's logits equal its whole prompt run alone."""
  name, model, params = pair
  rng = np.random.RandomState(1)
  prefixes = [list(rng.randint(3, 160, n)) for n in (9, 4)]
  questions = [[list(rng.randint(3, 160, n)) for n in (3, 5)],
               [list(rng.randint(3, 160, n)) for n in (6,)]]
  width = max(map(len, prefixes))
  ids = np.zeros((2, width), np.int32)
  mask = np.zeros_like(ids)
  for r, p in enumerate(prefixes):
    ids[r, :len(p)], mask[r, :len(p)] = p, 1
  _, context = model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask),
                           position_ids=jnp.broadcast_to(jnp.arange(width), (2, width)),
                           return_residual=True, return_kv=True)
  # Rows swapped through `rows`, to check the gather too.
  context = context.rows(jnp.asarray([1, 0]))
  row_len = 12
  q_ids, segments, positions = (np.zeros((2, row_len), np.int32) for _ in range(3))
  q_mask = np.zeros_like(q_ids)
  spans = []
  for row, r in enumerate((1, 0)):
    at = 0
    for s, q in enumerate(questions[r]):
      sl = slice(at, at + len(q))
      q_ids[row, sl], q_mask[row, sl], segments[row, sl] = q, 1, s + 1
      positions[row, sl] = np.arange(len(prefixes[r]), len(prefixes[r]) + len(q))
      spans.append((row, sl, prefixes[r] + q, len(prefixes[r])))
      at += len(q)
  logits = np.asarray(model.apply({"params": params}, jnp.asarray(q_ids),
                                  attention_mask=jnp.asarray(q_mask),
                                  segment_ids=jnp.asarray(segments),
                                  position_ids=jnp.asarray(positions), context=context))
  for row, sl, whole, n_prefix in spans:
    diff = np.abs(logits[row, sl] - _full(model, params, whole)[n_prefix:]).max()
    assert diff <= TOL, f"{name}: row {row}: {diff}"


def test_context_errors_are_clear():
  _, model, params = make_pair("llama_llama3_rope")
  ids = jnp.asarray([[5, 6, 7]])
  _, kv = model.apply({"params": params}, ids, return_kv=True, return_residual=True)
  with pytest.raises(ValueError, match="explicit position_ids"):
    model.apply({"params": params}, ids, context=kv)
  with pytest.raises(ValueError, match="context has batch 1, the input has 2"):
    model.apply({"params": params}, jnp.asarray([[5, 6], [7, 8]]), context=kv,
                position_ids=jnp.asarray([[3, 4], [3, 4]]))
  cache = models.init_cache(model, 1, 8)
  with pytest.raises(ValueError, match="decode=True keeps its own cache"):
    model.apply({"params": params, "cache": cache}, ids,
                attention_mask=jnp.ones((1, 8), jnp.int32), position_ids=jnp.asarray([[3, 4, 5]]),
                decode=True, context=kv, mutable=["cache"])
