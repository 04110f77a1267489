"""Option losses train on real pipeline batches; validation reports option accuracy."""
import json
import math

import ml_collections
from absl import logging

from configs import tiny
from surveylm_jax.train import loop


def test_option_losses_and_validation_option_accuracy(tmp_path, task4_files):
  logging.set_verbosity(logging.WARNING)
  c = tiny.get_config()
  c.data.train, c.data.eval = task4_files
  c.data.seq_len, c.data.batch_size = 128, 4
  c.train.steps, c.train.log_every, c.train.eval_batches = 2, 1, 2
  c.checkpoint.async_save = False
  c.data.max_records = c.eval.max_records = -1
  c.loss = ml_collections.ConfigDict({"token_ce": 1.0, "option_kl": 0.5, "option_w1": 0.5})
  final = loop.train_and_evaluate(c, str(tmp_path))
  for key in ("token_ce", "option_kl", "option_w1", "val_loss", "val_option_accuracy"):
    assert key in final and math.isfinite(final[key]), key
  assert 0.0 <= final["val_option_accuracy"] <= 1.0
  with open(tmp_path / "metrics.jsonl", encoding="utf-8") as f:
    assert any("val_option_accuracy" in json.loads(line) for line in f)
