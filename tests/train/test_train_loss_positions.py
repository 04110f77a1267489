"""Logits only at loss-read positions (`train.loss_positions`): the losses come out the same as
with logits everywhere, rows that need more positions are refused, and training runs with it
and with `lora.train_top_layers`.

Tolerance: 1e-6 absolute on losses (the same numbers gathered, then reduced).
"""
import json
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from absl import logging

from configs import tiny
from surveylm_jax.train import loop, loss_positions, losses
from tests.models.hf_reference import make_pair, padded_batch


def _batch(rng, rows=3, length=20, slots=2, options=3):
  loss_mask = np.zeros((rows, length), np.int32)
  option_positions = np.full((rows, slots), -1, np.int32)
  for r in range(rows):
    cut = rng.choice(length, 5, replace=False)
    loss_mask[r, cut[:3]] = 1
    option_positions[r, 0] = cut[0]                # an answer slot on a trained token
    if r:
      option_positions[r, 1] = cut[4]              # one on a position with no token loss
  return {
      "targets": rng.randint(0, 50, (rows, length)).astype(np.int32),
      "loss_mask": loss_mask, "option_positions": option_positions,
      "option_token_ids": rng.randint(0, 50, (rows, slots, options)).astype(np.int32),
      "option_mask": np.ones((rows, slots, options), np.int32),
      "option_targets": rng.dirichlet(np.ones(options), (rows, slots)).astype(np.float32)}


def test_losses_on_selected_positions_equal_the_full_losses():
  rng = np.random.RandomState(0)
  batch = {k: jnp.asarray(v) for k, v in _batch(rng).items()}
  logits = jnp.asarray(rng.normal(size=(3, 20, 50)).astype(np.float32))
  fn = losses.combined_loss({"token_ce": 1.0, "option_kl": 0.5, "option_w1": 0.5})
  full, full_aux = fn(logits, batch)
  order, picked = loss_positions.select(batch, 6)
  part, part_aux = fn(jnp.take_along_axis(logits, order[..., None], axis=1), picked)
  assert abs(float(full) - float(part)) <= 1e-6
  for key in ("token_ce", "option_kl", "option_w1", "target_tokens"):
    assert abs(float(full_aux[key]) - float(part_aux[key])) <= 1e-6, key
  # Kept positions come first and in row order.
  need = np.asarray(picked["loss_mask"]).sum(1)
  assert (need == np.asarray(batch["loss_mask"]).sum(1)).all()


def test_model_logit_positions_are_the_full_logits_gathered():
  _, model, params = make_pair("llama_llama3_rope")
  ids, mask, _ = (jnp.asarray(a) for a in padded_batch())
  where = jnp.asarray([[13, 2, 5], [13, 12, 6], [10, 11, 12]])
  full = model.apply({"params": params}, ids, attention_mask=mask)
  some = model.apply({"params": params}, ids, attention_mask=mask, logit_positions=where)
  np.testing.assert_allclose(some, jnp.take_along_axis(full, where[..., None], axis=1),
                             atol=1e-5)


def test_rows_needing_more_positions_are_refused():
  batch = _batch(np.random.RandomState(1))
  loss_positions.check_rows(batch, 5, where="train batch 1")     # row 1 needs exactly 4
  with pytest.raises(loss_positions.LossPositionsError,
                     match=r"train batch 7: row 1 has 4 positions .* train.loss_positions is 3"):
    loss_positions.check_rows(batch, 3, where="train batch 7")


def _config(task4_files, **train):
  c = tiny.get_config()
  c.data.train, c.data.eval = task4_files
  c.data.seq_len, c.data.batch_size, c.data.share_prefixes = 128, 4, True
  c.train.steps, c.train.log_every, c.train.eval_batches = 1, 1, 1
  c.checkpoint.async_save = False
  c.data.max_records = c.eval.max_records = -1
  c.loss = ml_collections.ConfigDict({"token_ce": 1.0, "option_kl": 1.0})
  for key, value in train.items():
    section, name = key.split("__")
    c[section][name] = value
  return c


def test_training_with_loss_positions_and_top_layers(tmp_path, task4_files):
  logging.set_verbosity(logging.WARNING)
  plain = loop.train_and_evaluate(_config(task4_files), str(tmp_path / "plain"))
  fast = loop.train_and_evaluate(
      _config(task4_files, train__loss_positions=64, lora__train_top_layers=1),
      str(tmp_path / "fast"))
  # Step 1 starts from the same params: same loss whatever is computed where.
  assert math.isfinite(fast["loss"]) and math.isfinite(fast["val_loss"])
  first = {}
  for name in ("plain", "fast"):
    with open(tmp_path / name / "metrics.jsonl", encoding="utf-8") as f:
      rows = [json.loads(line) for line in f]
    first[name] = next(r for r in rows if r.get("step") == 1)
  assert abs(first["plain"]["loss"] - first["fast"]["loss"]) <= 1e-4
  with pytest.raises(loss_positions.LossPositionsError, match="train batch 1: row"):
    loop.train_and_evaluate(_config(task4_files, train__loss_positions=2),
                            str(tmp_path / "small"))
