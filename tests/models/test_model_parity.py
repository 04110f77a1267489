"""Flax decoder vs transformers (PyTorch, float32) on tiny random configs of every family.

Tolerance: logits max abs difference <= 1e-4 at every real (non-pad) position.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from surveylm_jax import inference, models
from tests.models.hf_reference import FAMILIES, make_pair, padded_batch, torch_logits

LOGIT_TOL = 1e-4


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def pair(request):
  return (request.param,) + make_pair(request.param)


def test_logits_match_transformers_on_padded_batch(pair):
  name, torch_model, model, params = pair
  ids, mask, positions = padded_batch()
  ref = torch_logits(torch_model, ids, mask, positions)
  # Our default positions for a left-padded batch are exactly these (count of real tokens).
  ours = np.asarray(model.apply({"params": params}, jnp.asarray(ids),
                                attention_mask=jnp.asarray(mask)))
  diff = np.abs(ours - ref)[mask.astype(bool)].max()
  print(f"{name}: logits max abs diff {diff:.2e}")
  assert diff <= LOGIT_TOL, f"{name}: {diff}"


def test_greedy_generation_matches_transformers(pair):
  name, torch_model, model, params = pair
  ids, mask, _ = padded_batch(seed=1)
  ours = inference.generate(model, params, ids, mask, max_new_tokens=16, temperature=0.0,
                            eos_token_id=[], pad_token_id=0)
  with torch.no_grad():
    ref = torch_model.generate(torch.tensor(ids), attention_mask=torch.tensor(mask),
                               max_new_tokens=16, min_new_tokens=16, do_sample=False,
                               eos_token_id=None, pad_token_id=0).numpy()
  np.testing.assert_array_equal(ours, ref, err_msg=name)


def test_kv_cache_decode_matches_full_forward(pair):
  """Prefill + one-token decode steps reproduce the full forward's logits."""
  name, _, model, params = pair
  ids, mask, positions = padded_batch(seed=2, length=12)
  full = np.asarray(model.apply({"params": params}, jnp.asarray(ids),
                                attention_mask=jnp.asarray(mask)))
  cache = models.init_cache(model, ids.shape[0], ids.shape[1])
  prefix = 7
  kv_mask = jnp.asarray(mask)   # the cache has exactly ids.shape[1] slots
  step_mask = kv_mask.at[:, prefix:].set(0)
  logits, state = model.apply({"params": params, "cache": cache}, jnp.asarray(ids[:, :prefix]),
                              attention_mask=step_mask,
                              position_ids=jnp.asarray(positions[:, :prefix]), decode=True,
                              mutable=["cache"])
  outs = [np.asarray(logits)]
  for t in range(prefix, ids.shape[1]):
    step_mask = step_mask.at[:, t].set(kv_mask[:, t])
    logits, state = model.apply({"params": params, **state}, jnp.asarray(ids[:, t:t + 1]),
                                attention_mask=step_mask,
                                position_ids=jnp.asarray(positions[:, t:t + 1]), decode=True,
                                mutable=["cache"])
    outs.append(np.asarray(logits))
  stepped = np.concatenate(outs, axis=1)
  diff = np.abs(stepped - full)[mask.astype(bool)].max()
  assert diff <= LOGIT_TOL, f"{name}: {diff}"


def test_packed_segments_do_not_attend_across(pair):
  """Two sequences packed in one row give the logits each gets alone."""
  name, _, model, params = pair
  rng = np.random.RandomState(3)
  a, b = rng.randint(3, 160, 6), rng.randint(3, 160, 8)
  packed = np.concatenate([a, b, [0, 0]])[None]
  segments = np.array([[1] * 6 + [2] * 8 + [0, 0]])
  out = np.asarray(model.apply({"params": params}, jnp.asarray(packed),
                               segment_ids=jnp.asarray(segments)))
  alone_a = np.asarray(model.apply({"params": params}, jnp.asarray(a[None])))
  alone_b = np.asarray(model.apply({"params": params}, jnp.asarray(b[None])))
  assert np.abs(out[0, :6] - alone_a[0]).max() <= LOGIT_TOL, name
  assert np.abs(out[0, 6:14] - alone_b[0]).max() <= LOGIT_TOL, name


def test_shared_prefix_packing_equals_repeating_the_prefix(pair):
  """prefix | q1 | q2 (each question reads the prefix, not the other question, positions
  continuing after the prefix) == prefix+q1 and prefix+q2 run alone."""
  name, _, model, params = pair
  rng = np.random.RandomState(4)
  prefix, q1, q2 = rng.randint(3, 160, 7), rng.randint(3, 160, 4), rng.randint(3, 160, 5)
  packed = np.concatenate([prefix, q1, q2, [0]])[None]
  segments = np.array([[1] * 7 + [2] * 4 + [3] * 5 + [0]])
  prefix_segments = np.array([[0] * 7 + [1] * 4 + [1] * 5 + [0]])
  positions = np.array([list(range(7)) + list(range(7, 11)) + list(range(7, 12)) + [0]])
  out = np.asarray(model.apply({"params": params}, jnp.asarray(packed),
                               attention_mask=jnp.asarray((segments > 0).astype(np.int32)),
                               segment_ids=jnp.asarray(segments),
                               prefix_segment_ids=jnp.asarray(prefix_segments),
                               position_ids=jnp.asarray(positions)))
  alone1 = np.asarray(model.apply({"params": params}, jnp.asarray(np.concatenate([prefix, q1])[None])))
  alone2 = np.asarray(model.apply({"params": params}, jnp.asarray(np.concatenate([prefix, q2])[None])))
  assert np.abs(out[0, :11] - alone1[0]).max() <= LOGIT_TOL, name
  assert np.abs(out[0, 11:16] - alone2[0, 7:]).max() <= LOGIT_TOL, name
  # Without the prefix link the questions would not see the background: logits differ.
  unlinked = np.asarray(model.apply({"params": params}, jnp.asarray(packed),
                                    segment_ids=jnp.asarray(segments),
                                    position_ids=jnp.asarray(positions)))
  assert np.abs(unlinked[0, 11:16] - alone2[0, 7:]).max() > 1e-3, name


def test_prefix_segments_need_segments_and_positions():
  _, model, params = make_pair("llama_llama3_rope")
  ids = jnp.ones((1, 4), jnp.int32)
  with pytest.raises(ValueError, match="prefix_segment_ids needs segment_ids"):
    model.apply({"params": params}, ids, prefix_segment_ids=jnp.zeros((1, 4), jnp.int32))


def test_remat_policy_gives_same_logits_and_grads():
  _, model, params = make_pair("llama_llama3_rope")
  remat = models.Transformer(model.config.replace(remat_policy="dots_saveable"))
  ids, mask, _ = padded_batch()

  def loss(m, p):
    return jnp.mean(m.apply({"params": p}, jnp.asarray(ids), attention_mask=jnp.asarray(mask)) ** 2)
  g1 = jax.grad(lambda p: loss(model, p))(params)
  g2 = jax.grad(lambda p: loss(remat, p))(params)
  for x, y in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2)):
    np.testing.assert_allclose(x, y, atol=1e-6)


def test_every_param_has_logical_axes():
  _, model, params = make_pair("qwen3_qknorm_headdim")
  axes = models.logical_axes(model)
  leaves = jax.tree_util.tree_leaves_with_path(params)
  for path, leaf in leaves:
    spec = axes
    for key in path:
      spec = spec[key.key]
    assert spec is not None and len(spec) == leaf.ndim, (path, spec)
    assert all(name is not None for name in spec), (path, spec)
  assert tuple(axes["layers"]["self_attn"]["q_proj"]["kernel"]) == (
      "layers", "embed", "heads", "head_dim")
  assert tuple(axes["embed_tokens"]["embedding"]) == ("vocab", "embed")
