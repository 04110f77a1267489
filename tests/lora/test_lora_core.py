"""LoRA config, init, merge, the unmerged forward and its gradients, on a tiny random model."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from surveylm_jax import lora, models

ALL = lora.ALL_PROJECTIONS


# --- config and targets ----------------------------------------------------------------------

def test_scale_plain_and_rslora():
  assert lora.LoraConfig(rank=8, alpha=16).scale == 2.0
  assert lora.LoraConfig(rank=16, alpha=16, use_rslora=True).scale == 4.0


@pytest.mark.parametrize("kwargs, message", [
    (dict(rank=0), "rank must be a positive int"),
    (dict(rank=2.5), "rank must be a positive int"),
    (dict(alpha=0), "alpha must be positive"),
    (dict(dropout=1.0), "dropout must be in"),
    (dict(targets="q_proj("), "not a valid regex"),
    (dict(targets=3), "module names or a regex"),
])
def test_config_rejects_bad_values(kwargs, message):
  with pytest.raises(lora.LoraError, match=message):
    lora.LoraConfig(**kwargs)


def test_config_is_hashable_with_list_targets():
  cfg = lora.LoraConfig(targets=["q_proj", "v_proj"])
  assert cfg.targets == ("q_proj", "v_proj")
  hash(cfg)


@pytest.mark.parametrize("targets, expected", [
    (ALL, list(ALL)),
    (("v_proj", "q_proj"), ["q_proj", "v_proj"]),
    ("self_attn/(q|v)_proj", ["q_proj", "v_proj"]),
    ("mlp/", ["gate_proj", "up_proj", "down_proj"]),
    (".*", list(ALL)),
])
def test_resolve_targets(tiny, targets, expected):
  assert lora.resolve_targets(tiny.params, lora.LoraConfig(targets=targets)) == expected


def test_unknown_target_lists_available_modules(tiny):
  with pytest.raises(lora.LoraError) as e:
    lora.init(tiny.params, lora.LoraConfig(targets=("q_proj", "qkv_proj", "lm_head")),
              jax.random.PRNGKey(0))
  msg = str(e.value)
  assert "'qkv_proj'" in msg and "'lm_head'" in msg
  for name in ALL:
    assert name in msg
  assert "layers/mlp/down_proj" in msg


def test_regex_matching_nothing_lists_available_modules(tiny):
  with pytest.raises(lora.LoraError, match=r"matches no module; available: q_proj"):
    lora.init(tiny.params, lora.LoraConfig(targets="attention/query"), jax.random.PRNGKey(0))


# --- init --------------------------------------------------------------------------------------

def test_init_shapes_and_peft_distribution(tiny_adapter):
  _, lp, _ = tiny_adapter
  shapes = jax.tree_util.tree_map(jnp.shape, lp)
  assert shapes["layers"]["self_attn"]["q_proj"] == {"a": (2, 24, 4), "b": (2, 4, 4, 8)}
  assert shapes["layers"]["self_attn"]["k_proj"] == {"a": (2, 24, 4), "b": (2, 4, 2, 8)}
  assert shapes["layers"]["self_attn"]["o_proj"] == {"a": (2, 4, 8, 4), "b": (2, 4, 24)}
  assert shapes["layers"]["mlp"]["down_proj"] == {"a": (2, 40, 4), "b": (2, 4, 24)}
  for name, spec, factors in lora.core.iter_modules(lp):
    fan_in = math.prod(factors["a"].shape[1:-1])
    a = np.asarray(factors["a"])
    assert np.all(np.abs(a) <= fan_in ** -0.5), name
    # Uniform on [-1/sqrt(fan_in), 1/sqrt(fan_in)]: the spread reaches well past half the bound.
    assert np.abs(a).max() > 0.8 * fan_in ** -0.5, name
    assert not np.any(np.asarray(factors["b"])), name
    assert factors["a"].dtype == jnp.float32
  per_layer = 4 * ((24 + 32) + 2 * (24 + 16) + (32 + 24) + 3 * (24 + 40))   # q, k+v, o, mlp
  assert lora.num_params(lp) == 2 * per_layer


def test_init_is_deterministic_and_reads_abstract_params(tiny, tiny_adapter):
  cfg, fresh, _ = tiny_adapter            # initialised with PRNGKey(0)
  abstract = models.abstract_params(tiny.model)             # boxed ShapeDtypeStructs
  again = lora.init(abstract, cfg, jax.random.PRNGKey(0))
  jax.tree_util.tree_map(np.testing.assert_array_equal, again, fresh)
  other = lora.init(abstract, cfg, jax.random.PRNGKey(1))
  assert not np.allclose(other["layers"]["mlp"]["up_proj"]["a"],
                         fresh["layers"]["mlp"]["up_proj"]["a"])
  assert not np.allclose(fresh["layers"]["self_attn"]["q_proj"]["a"],
                         fresh["layers"]["self_attn"]["k_proj"]["a"])
  bf16 = lora.init(abstract, cfg, jax.random.PRNGKey(0), dtype=jnp.bfloat16)
  assert {x.dtype for x in jax.tree_util.tree_leaves(bf16)} == {jnp.dtype(jnp.bfloat16)}


# --- forward and merge -------------------------------------------------------------------------

def test_fresh_adapter_leaves_logits_unchanged(tiny, tiny_adapter, helpers):
  ids, mask = helpers.batch()
  cfg, lp, _ = tiny_adapter
  base = helpers.logits(tiny.model, tiny.params, ids, mask)
  adapted = helpers.logits(tiny.model, tiny.params, ids, mask, lp, cfg)
  np.testing.assert_allclose(adapted, base, rtol=0, atol=1e-6)


@pytest.mark.parametrize("cfg", [
    lora.LoraConfig(rank=4, alpha=8),
    lora.LoraConfig(rank=4, alpha=8, use_rslora=True, targets=("o_proj", "down_proj")),
])
def test_merged_and_unmerged_forwards_agree(tiny, tiny_adapter, helpers, cfg):
  ids, mask = helpers.batch()
  lp = tiny_adapter[2]
  if cfg.targets != tiny_adapter[0].targets:
    lp = helpers.randomise_b(lora.init(tiny.params, cfg, jax.random.PRNGKey(0)))
  unmerged = helpers.logits(tiny.model, tiny.params, ids, mask, lp, cfg)
  merged_params = jax.jit(lora.merge, static_argnums=2)(tiny.params, lp, cfg)
  merged = helpers.logits(tiny.model, merged_params, ids, mask)
  base = helpers.logits(tiny.model, tiny.params, ids, mask)
  assert np.abs(unmerged - base).max() > 1e-2          # the adapter really does something
  np.testing.assert_allclose(merged, unmerged, rtol=0, atol=1e-5)
  # Untargeted kernels are passed through, the input tree is not modified.
  untouched = [n for n in lora.ALL_PROJECTIONS if n not in lora.resolve_targets(tiny.params, cfg)]
  eager_merged = lora.merge(tiny.params, lp, cfg)
  for name in untouched:
    assert lora.core.kernel_of(eager_merged, name) is lora.core.kernel_of(tiny.params, name)
  for name in lora.resolve_targets(tiny.params, cfg):
    assert not np.allclose(lora.core.kernel_of(merged_params, name),
                           lora.core.kernel_of(tiny.params, name))


def test_merge_keeps_kernel_dtype(tiny, helpers):
  cfg = lora.LoraConfig(rank=2, targets=("q_proj",))
  bf16 = jax.tree_util.tree_map(lambda x: x.astype(jnp.bfloat16), tiny.params)
  lp = helpers.randomise_b(lora.init(bf16, cfg, jax.random.PRNGKey(0)))
  merged = lora.merge(bf16, lp, cfg)
  kernel = lora.core.kernel_of(merged, "q_proj")
  assert kernel.dtype == jnp.bfloat16
  expected = (bf16["layers"]["self_attn"]["q_proj"]["kernel"].astype(jnp.float32)
              + cfg.scale * jnp.einsum("lir,lrhd->lihd", lp["layers"]["self_attn"]["q_proj"]["a"],
                                       lp["layers"]["self_attn"]["q_proj"]["b"]))
  np.testing.assert_allclose(kernel.astype(jnp.float32), expected, atol=2e-2)


def test_shape_mismatch_lists_every_bad_factor(tiny, tiny_adapter):
  cfg, fresh, _ = tiny_adapter
  lp = jax.tree_util.tree_map(lambda x: x, fresh)          # a copy of the dict structure
  lp["layers"]["self_attn"]["q_proj"]["b"] = jnp.zeros((2, 4, 32))        # heads not split
  lp["layers"]["mlp"]["up_proj"]["a"] = jnp.zeros((2, 24, 3))             # wrong rank
  with pytest.raises(lora.LoraError) as e:
    lora.merge(tiny.params, lp, cfg)
  msg = str(e.value)
  assert "layers/self_attn/q_proj/b has shape (2, 4, 32), expected (2, 4, 4, 8)" in msg
  assert "layers/mlp/up_proj/a has shape (2, 24, 3), expected (2, 24, 4)" in msg
  with pytest.raises(lora.LoraError, match="expected"):
    lora.merge(tiny.params, fresh, cfg.replace(rank=8))


def test_unknown_leaves_in_adapter_tree_are_errors(tiny, helpers):
  ids, mask = helpers.batch()
  cfg = lora.LoraConfig(rank=2, targets=("q_proj",))
  lp = lora.init(tiny.params, cfg, jax.random.PRNGKey(0))
  lp["layers"]["self_attn"]["qproj"] = lp["layers"]["self_attn"]["q_proj"]   # a typo'd copy
  with pytest.raises(lora.LoraError, match="layers/self_attn/qproj/a"):
    lora.apply(tiny.model, tiny.params, lp, cfg, ids, attention_mask=mask)
  del lp["layers"]["self_attn"]["qproj"]
  del lp["layers"]["self_attn"]["q_proj"]["b"]
  with pytest.raises(lora.LoraError, match="lacks factor.*q_proj/b"):
    lora.merge(tiny.params, lp, cfg)


def test_dropout_acts_only_when_not_deterministic(tiny, tiny_adapter, helpers):
  ids, mask = helpers.batch()
  no_dropout, _, lp = tiny_adapter
  cfg = no_dropout.replace(dropout=0.5)
  # Evaluation (deterministic=True, the default) ignores the dropout rate ...
  np.testing.assert_allclose(helpers.logits(tiny.model, tiny.params, ids, mask, lp, cfg),
                             helpers.logits(tiny.model, tiny.params, ids, mask, lp, no_dropout),
                             atol=1e-6)
  # ... training draws a new mask per rng. (RBG keys: threefry's dropout masks take ~3x
  # longer to compile on CPU, and the key type is incidental to what is tested here.)
  train = [helpers.logits(tiny.model, tiny.params, ids, mask, lp, cfg,
                          dropout_rng=jax.random.key(k, impl="rbg")) for k in range(2)]
  eval_out = helpers.logits(tiny.model, tiny.params, ids, mask, lp, cfg)
  assert np.abs(train[0] - eval_out).max() > 1e-3
  assert np.abs(train[0] - train[1]).max() > 1e-3


def test_logical_axes_follow_the_kernels(tiny, tiny_adapter):
  lp = tiny_adapter[1]
  axes = lora.logical_axes(tiny.model, lp)
  P = jax.sharding.PartitionSpec
  assert axes["layers"]["self_attn"]["q_proj"] == {
      "a": P("layers", "embed", None), "b": P("layers", None, "heads", "head_dim")}
  assert axes["layers"]["self_attn"]["o_proj"] == {
      "a": P("layers", "heads", "head_dim", None), "b": P("layers", None, "embed")}
  assert axes["layers"]["mlp"]["gate_proj"] == {"a": P("layers", "embed", None),
                                                "b": P("layers", None, "mlp")}
  assert jax.tree_util.tree_structure(axes, is_leaf=lambda x: isinstance(x, P)) == \
      jax.tree_util.tree_structure(lp)


# --- training ----------------------------------------------------------------------------------

def _dot_output_shapes(jaxpr):
  """Output shapes of every dot_general in a (closed) jaxpr, nested jaxprs included."""
  shapes = set()
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      shapes.update(tuple(sorted(v.aval.shape)) for v in eqn.outvars)
    for sub in jax.core.jaxprs_in_params(eqn.params):
      shapes |= _dot_output_shapes(sub)
  return shapes


def test_gradients_reach_only_lora_and_no_weight_gradient_is_formed(tiny, tiny_adapter,
                                                                  helpers):
  ids, mask = helpers.batch()        # 3 x 7: no activation shares a kernel's dimensions
  cfg, _, lp = tiny_adapter
  rng = jax.random.PRNGKey(0)

  _, grads = helpers.lora_value_and_grad(tiny.model, cfg)(lp, tiny.params, ids, mask, rng)
  assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(lp)
  for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
    assert float(jnp.abs(g).max()) > 0, jax.tree_util.keystr(path)

  # The frozen kernels' per-layer shapes: a full fine-tune step has dots producing them (weight
  # gradients); the LoRA step must have none. Shapes are compared as sorted dims, since
  # autodiff may emit a weight gradient transposed.
  kernel_shapes = {tuple(sorted(lora.core.kernel_of(tiny.params, n).shape[1:]))
                   for n in lora.ALL_PROJECTIONS}
  lora_loss = helpers.lora_loss_fn(tiny.model, cfg)
  lora_dots = _dot_output_shapes(
      jax.make_jaxpr(jax.grad(lora_loss))(lp, tiny.params, ids, mask, rng).jaxpr)

  def full_loss(params):
    logits = tiny.model.apply({"params": params}, ids, attention_mask=mask)
    return helpers.token_loss(logits, ids, mask)
  full_dots = _dot_output_shapes(jax.make_jaxpr(jax.grad(full_loss))(tiny.params).jaxpr)
  assert kernel_shapes <= full_dots          # the check can see weight gradients ...
  assert not kernel_shapes & lora_dots       # ... and the LoRA step forms none


def test_few_optimizer_steps_lower_the_loss_and_leave_base_untouched(tiny, tiny_adapter,
                                                                    helpers):
  ids, mask = helpers.batch(seed=3)
  cfg, lp, _ = tiny_adapter                   # fresh: B = 0
  value_and_grad = helpers.lora_value_and_grad(tiny.model, cfg)
  optimizer = optax.adam(3e-2)
  opt_state = optimizer.init(lp)
  # The optimizer state mirrors the adapter only: two moment trees of the adapter's size.
  assert sum(x.size for x in jax.tree_util.tree_leaves(opt_state)) == 2 * lora.num_params(lp) + 1
  update = jax.jit(optimizer.update)
  base = jax.tree_util.tree_map(np.array, tiny.params)

  losses = []
  for step in range(8):
    loss, grads = value_and_grad(lp, tiny.params, ids, mask, jax.random.PRNGKey(step))
    updates, opt_state = update(grads, opt_state, lp)
    lp = optax.apply_updates(lp, updates)
    losses.append(float(loss))
  assert np.mean(losses[-3:]) < losses[0] - 0.05, losses
  jax.tree_util.tree_map(np.testing.assert_array_equal, base, tiny.params)
