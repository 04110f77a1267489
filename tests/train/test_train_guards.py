"""Guards: a non-finite loss stops the run and keeps the last good checkpoint; a workdir holding
an incompatible run is refused with the differing settings named."""
import re

import pytest
from absl import logging

from configs import tiny
from surveylm_jax.train import checkpointing, loop


def _config(train, test, **changes):
  c = tiny.get_config()
  c.data.train, c.data.eval = train, test
  c.data.seq_len, c.data.batch_size = 128, 4
  c.train.steps, c.train.log_every, c.train.eval_batches = 4, 1, 1
  c.checkpoint.every_steps, c.checkpoint.async_save = 1, False
  c.data.max_records = c.eval.max_records = -1
  for key, value in changes.items():
    section, field = key.split(".")
    setattr(getattr(c, section), field, value)
  return c


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, task4_files):
  logging.set_verbosity(logging.WARNING)
  config = _config(*task4_files, **{"train.lr": 1e30, "train.grad_clip": 0.0})
  with pytest.raises(loop.NonFiniteLossError, match="last good checkpoint") as err:
    loop.train_and_evaluate(config, str(tmp_path))
  failed_step = int(re.search(r"step (\d+): loss", str(err.value)).group(1))
  ckpt = checkpointing.Checkpointer(str(tmp_path), async_save=False)
  assert ckpt.latest_step() == failed_step - 1   # the failed step was never saved
  ckpt.close()
  # ... and it restores: a run of the same config ending at that step resumes from it.
  loop.train_and_evaluate(_config(*task4_files, **{"train.lr": 1e30, "train.grad_clip": 0.0,
                                                   "train.steps": failed_step - 1}),
                          str(tmp_path))


def test_incompatible_workdir_is_refused_with_reason(tmp_path, task4_files):
  logging.set_verbosity(logging.WARNING)
  loop.train_and_evaluate(_config(*task4_files, **{"train.steps": 1}), str(tmp_path))
  other = _config(*task4_files, **{"train.steps": 2, "lora.rank": 8})
  with pytest.raises(checkpointing.IncompatibleCheckpointError,
                     match=r"lora.rank: checkpoint has 4, config has 8"):
    loop.train_and_evaluate(other, str(tmp_path))


@pytest.mark.parametrize("mode", [{"train.steps": 4, "train.epochs": 0}, {"train.epochs": 1}])
def test_data_that_fill_no_batch_is_an_error_not_a_hang(tmp_path, task4_files, mode):
  # Every fixture prompt is ~80 tokens: at seq_len 24 each is dropped even with its profile cut.
  # A run by steps used to wait forever for a first batch.
  from surveylm_jax.cli import ConfigError
  config = _config(*task4_files, **{"data.seq_len": 24, **mode})
  with pytest.raises(ConfigError, match=r"train.json: the training data fill no batch of 4 rows x 24 "
                                        r"tokens: 72 records, 72 dropped .* data.seq_len=24"):
    loop.train_and_evaluate(config, str(tmp_path))
  # Too few records for one batch is the same error, with nothing dropped.
  config = _config(*task4_files, **{"data.batch_size": 80, "data.pack": False, **mode})
  with pytest.raises(ConfigError, match=r"72 records, 0 dropped .* 72 kept -> 72 rows"):
    loop.train_and_evaluate(config, str(tmp_path / "b"))
