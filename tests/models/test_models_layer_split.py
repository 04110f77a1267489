"""Two-stack forward (`models.layer_split`): the same logits as one stack, and gradients that
reach only the upper layers' adapters -- equal there to the one-stack gradients.

Tolerance: 1e-5 absolute (float32, same operations in a different grouping).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from surveylm_jax import lora as lora_lib
from surveylm_jax.models import layer_split
from tests.models.hf_reference import make_pair, padded_batch

TOL = 1e-5


def _adapter(model, params, seed=0):
  cfg = lora_lib.LoraConfig(rank=4, alpha=8.0, targets=("q_proj", "v_proj", "down_proj"))
  lora = lora_lib.init(params, cfg, jax.random.PRNGKey(seed))
  # Non-zero b so the adapter changes the output in every layer.
  lora = jax.tree_util.tree_map(
      lambda x: x + 0.05 * jax.random.normal(jax.random.PRNGKey(seed + 1), x.shape), lora)
  return lora_lib.lora_model(model, cfg), lora


# A tied head with qkv biases, and per-layer sliding windows: the two ways a split could go wrong.
@pytest.mark.parametrize("name", ["qwen2_bias_tied", "mistral_sliding_window"])
def test_split_forward_equals_one_stack_and_stops_gradients(name):
  _, model, params = make_pair(name)
  model, lora = _adapter(model, params)
  ids, mask, positions = (jnp.asarray(a) for a in padded_batch())
  kwargs = dict(attention_mask=mask, position_ids=positions)
  layers = model.config.num_hidden_layers

  def loss(tree, split):
    variables = {"params": params, "lora": tree}
    if split:
      out = layer_split.apply_split(model, variables, ids, split=split, **kwargs)
    else:
      out = model.apply(variables, ids, **kwargs)
    return jnp.mean(jnp.tanh(out) * mask[..., None]), out

  (_, full), g_full = jax.value_and_grad(lambda t: loss(t, 0), has_aux=True)(lora)
  for split in range(1, layers):
    (_, part), g_part = jax.value_and_grad(lambda t: loss(t, split), has_aux=True)(lora)
    real = np.asarray(mask).astype(bool)
    assert np.abs(np.asarray(part) - np.asarray(full))[real].max() <= TOL
    for path, gf, gp in zip(jax.tree_util.tree_leaves_with_path(g_full),
                            jax.tree_util.tree_leaves(g_full), jax.tree_util.tree_leaves(g_part)):
      where = jax.tree_util.keystr(path[0])
      assert not np.any(np.asarray(gp[:split])), f"{where}: gradient below the split"
      np.testing.assert_allclose(gp[split:], gf[split:], atol=TOL, err_msg=where)
      assert np.any(np.asarray(gf[split:])), f"{where}: the check needs non-zero gradients"


def test_layer_range_keeps_each_layers_window():
  _, model, _ = make_pair("mistral_sliding_window")
  cfg = model.config.replace(num_hidden_layers=3, sliding_windows=(5, None, 7))
  upper = layer_split.layer_range_config(cfg, 1, 3)
  assert upper.num_hidden_layers == 2 and upper.sliding_windows == (None, 7)


def test_split_outside_the_stack_is_refused():
  _, model, params = make_pair("llama_llama3_rope")
  ids = jnp.ones((1, 4), jnp.int32)
  for split in (0, model.config.num_hidden_layers):
    with pytest.raises(ValueError, match="layer split must leave layers on both sides"):
      layer_split.apply_split(model, {"params": params}, ids, split=split)


def _packed_prefix_row():
  """prefix | q1 | q2 | pad, the shared-prefix layout of training and scoring rows."""
  rng = np.random.RandomState(4)
  ids = np.concatenate([rng.randint(3, 160, 7), rng.randint(3, 160, 4), rng.randint(3, 160, 5),
                        [0, 0]])[None]
  segments = np.array([[1] * 7 + [2] * 4 + [3] * 5 + [0, 0]])
  kwargs = dict(attention_mask=(segments > 0).astype(np.int32), segment_ids=segments,
                prefix_segment_ids=np.array([[0] * 7 + [1] * 9 + [0, 0]]),
                position_ids=np.array([list(range(11)) + list(range(7, 12)) + [0, 0]]))
  return jnp.asarray(ids), {k: jnp.asarray(v) for k, v in kwargs.items()}


# The top layer alone, read at a few positions, runs its queries / MLP / head there only.
@pytest.mark.parametrize("name", ["qwen2_bias_tied", "mistral_sliding_window"])
@pytest.mark.parametrize("layout", ["padded", "packed_prefix"])
def test_top_layer_read_at_positions_equals_the_full_forward(name, layout):
  _, model, params = make_pair(name)
  model, lora = _adapter(model, params)
  layers = model.config.num_hidden_layers
  if layout == "padded":
    ids, mask, positions = (jnp.asarray(a) for a in padded_batch())
    kwargs = dict(attention_mask=mask, position_ids=positions)
    where = jnp.asarray([[13, 2, 5], [13, 12, 6], [10, 11, 12]])
  else:
    ids, kwargs = _packed_prefix_row()
    where = jnp.asarray([[10, 15, 3]])

  def loss(tree, split):
    variables = {"params": params, "lora": tree}
    if split:
      out = layer_split.apply_split(model, variables, ids, split=split, logit_positions=where,
                                    **kwargs)
    else:
      out = jnp.take_along_axis(model.apply(variables, ids, **kwargs), where[..., None], axis=1)
    return jnp.mean(jnp.tanh(out)), out

  (_, full), g_full = jax.value_and_grad(lambda t: loss(t, 0), has_aux=True)(lora)
  (_, top), g_top = jax.value_and_grad(lambda t: loss(t, layers - 1), has_aux=True)(lora)
  assert top.shape == full.shape
  assert np.abs(np.asarray(top) - np.asarray(full)).max() <= TOL
  for path, gf, gt in zip(jax.tree_util.tree_leaves_with_path(g_full),
                          jax.tree_util.tree_leaves(g_full), jax.tree_util.tree_leaves(g_top)):
    where_ = jax.tree_util.keystr(path[0])
    np.testing.assert_allclose(gt[-1], gf[-1], atol=TOL, err_msg=where_)
    assert np.any(np.asarray(gf[-1])), f"{where_}: the check needs non-zero gradients"
