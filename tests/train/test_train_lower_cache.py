"""Cached lower layers (`train.cache_lower_layers`): a step on a cached residual stream equals the
step that runs the frozen layers itself, the replay order is a seeded permutation per pass, a
resumed run logs the losses of an uninterrupted one, and settings that would change the result
are refused. Slot-only losses keep logits at the answer slots only (`train.loss_positions`).

Tolerance: 1e-6 absolute on losses and updated adapters (the same arithmetic, regrouped).
"""
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import logging

from surveylm_jax import lora as lora_lib
from surveylm_jax import models
from surveylm_jax.train import data as train_data
from surveylm_jax.train import loop, loss_positions, losses, lower_cache, setup
from surveylm_jax.train.step import init_state, train_step
from tests.train.conftest import losses_by_step
from tests.train.test_train_loss_positions import _batch, _config


def _random_adapters(params, cfg, seed):
  """Adapters with nonzero A and B everywhere, so the lower layers' adapters matter."""
  tree = lora_lib.init(params, cfg, jax.random.PRNGKey(seed))
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
  return jax.tree_util.tree_unflatten(
      treedef, [0.05 * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)])


def test_step_on_cached_residual_equals_the_split_step(task4_files):
  c = _config(task4_files, lora__train_top_layers=1, train__loss_positions=64)
  data = train_data.TrainData(c)
  host = data.local_rows(next(data.train_iterator()))
  batch = {k: jnp.asarray(v) for k, v in host.items()}
  model = models.Transformer(setup.model_config(c))
  fns = setup.make_step_fns(c, model, total_steps=4)
  assert fns.split_layer == model.config.num_hidden_layers - 1
  params = model.init(jax.random.PRNGKey(0), batch["input_ids"][:, :4])["params"]
  state = init_state(_random_adapters(params, fns.lora_cfg, 3), fns.optimizer)
  rng = jax.random.PRNGKey(7)
  plain_state, plain = jax.jit(lambda s, b: train_step(fns, s, params, b, rng))(state, batch)
  residual = jax.jit(fns.lower_residual)(state.trainable, params, batch)
  assert residual.shape == batch["input_ids"].shape + (model.config.hidden_size,)
  cached_state, cached = jax.jit(lambda s, b: train_step(fns, s, params, b, rng))(
      state, lower_cache.LowerLayerCache([batch], [residual], seed=0).batch(0))
  assert abs(float(plain["loss"]) - float(cached["loss"])) <= 1e-6
  assert abs(float(plain["grad_norm"]) - float(cached["grad_norm"])) <= 1e-6
  diffs = jax.tree_util.tree_map(lambda a, b: float(jnp.max(jnp.abs(a - b))),
                                 plain_state.trainable, cached_state.trainable)
  assert max(jax.tree_util.tree_leaves(diffs)) <= 1e-6


def test_replay_order_is_a_seeded_permutation_per_pass():
  cache = lower_cache.LowerLayerCache([{"i": i} for i in range(5)], [np.zeros(1)] * 5, seed=3)
  passes = [[cache.index(p * 5 + s) for s in range(5)] for p in range(4)]
  for order in passes:
    assert sorted(order) == list(range(5))
  assert len({tuple(o) for o in passes}) > 1            # reshuffled between passes
  again = lower_cache.LowerLayerCache([{"i": i} for i in range(5)], [np.zeros(1)] * 5, seed=3)
  assert [again.index(s) for s in range(20)] == [x for o in passes for x in o]
  with pytest.raises(lower_cache.LowerCacheError, match="ended after 2 batches"):
    lower_cache.LowerLayerCache.build(iter([{}, {}]), 3, lambda b: np.zeros(1), seed=0,
                                      printer=lambda *a, **k: None)


def test_settings_that_would_change_the_result_are_refused(task4_files):
  with pytest.raises(lower_cache.LowerCacheError, match="needs lora.train_top_layers"):
    lower_cache.check_config(_config(task4_files, train__cache_lower_layers=2), split_layer=0)
  with pytest.raises(lower_cache.LowerCacheError, match="needs lora.dropout=0"):
    lower_cache.check_config(_config(task4_files, train__cache_lower_layers=2,
                                     lora__dropout=0.1), split_layer=1)
  assert lower_cache.check_config(_config(task4_files), split_layer=1) == 0


def test_cached_run_resumes_with_the_losses_of_an_uninterrupted_run(tmp_path, task4_files,
                                                                    capsys):
  logging.set_verbosity(logging.WARNING)
  c = _config(task4_files, lora__train_top_layers=1, train__cache_lower_layers=2,
              train__steps=6, checkpoint__every_steps=2)
  full = tmp_path / "full"
  loop.train_and_evaluate(c, str(full))
  assert "lower-layer cache: 2 batches" in capsys.readouterr().out
  reference = losses_by_step(full)
  assert sorted(reference) == list(range(1, 7))
  assert len(set(reference.values())) == 6               # the adapter moves: every loss differs

  resumed = tmp_path / "resumed"
  shutil.copytree(full, resumed)
  for step in ("4", "6"):
    shutil.rmtree(resumed / "checkpoints" / step)
  loop.train_and_evaluate(c, str(resumed))
  assert "resumed from" in capsys.readouterr().out
  again = losses_by_step(resumed)
  for step in range(1, 7):
    assert again[step] == reference[step], (step, again[step], reference[step])
  assert os.path.exists(resumed / "adapter" / "adapter_config.json")


def test_slot_only_losses_keep_logits_at_answer_slots_only():
  rng = np.random.RandomState(0)
  batch = {k: jnp.asarray(v) for k, v in _batch(rng).items()}
  logits = jnp.asarray(rng.normal(size=(3, 20, 50)).astype(np.float32))
  names = {"option_kl": 1.0, "option_w1": 0.5}
  assert not losses.reads_tokens(names) and losses.reads_tokens({"token_ce": 1.0, **names})
  fn = losses.combined_loss(names)
  full, _ = fn(logits, batch)
  # Row 1 has 3 token positions and 2 slots (one on a token): 4 positions with tokens, 2 without.
  with pytest.raises(loss_positions.LossPositionsError, match="answer tokens and answer slots"):
    loss_positions.check_rows(batch, 2, where="b")
  loss_positions.check_rows(batch, 2, where="b", tokens=False)
  order, picked = loss_positions.select(batch, 2, tokens=False)
  part, _ = fn(jnp.take_along_axis(logits, order[..., None], axis=1), picked)
  assert abs(float(full) - float(part)) <= 1e-6
  with pytest.raises(KeyError, match="registered:"):
    losses.reads_tokens(["no_such_loss"])


def test_zero_weight_switches_a_loss_off():
  rng = np.random.RandomState(0)
  batch = {k: jnp.asarray(v) for k, v in _batch(rng).items()}
  logits = jnp.asarray(rng.normal(size=(3, 20, 50)).astype(np.float32))
  only_kl, aux = losses.combined_loss({"token_ce": 0.0, "option_kl": 1.0})(logits, batch)
  assert "token_ce" not in aux
  assert float(only_kl) == float(losses.combined_loss({"option_kl": 1.0})(logits, batch)[0])
  assert not losses.reads_tokens(losses.active({"token_ce": 0.0, "option_kl": 1.0}))
  with pytest.raises(ValueError, match="every loss weight is 0"):
    losses.combined_loss({"token_ce": 0.0})
  with pytest.raises(KeyError, match="registered:"):
    losses.active({"nope": 0.0})
