"""Two stages: Stage II starts from the adapter Stage I exported (continue), or from the
Stage I-merged base with a fresh adapter (merge_then_fresh)."""
import json
import os

import numpy as np
from absl import logging

from configs import pipeline_tiny
from surveylm_jax.train import two_stage
from surveylm_jax.models.safetensors_io import SafetensorsFile


def _start(workdir):
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    return json.loads(f.readline())


def _config(train, test, stacking):
  c = pipeline_tiny.get_config()
  for stage in (c.stage1, c.stage2):
    stage.data.train = train
    stage.train.steps = 2
  c.stage2.data.eval = ""
  c.data.seq_len, c.data.batch_size = 128, 4
  c.checkpoint.async_save = False
  c.lora.stacking = stacking
  c.train.eval_batches = 0
  return c


def test_stage2_continues_the_stage1_adapter(tmp_path, task4_files):
  logging.set_verbosity(logging.WARNING)
  two_stage.run(_config(task4_files[0], task4_files[1], "continue"), str(tmp_path))
  s1, s2 = _start(tmp_path / "stage1"), _start(tmp_path / "stage2")
  assert s1["init_from"] == "fresh" and s1["init_lora_b_norm"] == 0.0
  assert s2["init_from"] == str(tmp_path / "stage1" / "adapter")
  adapter = SafetensorsFile(str(tmp_path / "stage1" / "adapter" / "adapter_model.safetensors"))
  tensors = {n: np.asarray(adapter.get(n), np.float64) for n in adapter.names()}
  b_norm = np.sqrt(sum((t ** 2).sum() for n, t in tensors.items() if "lora_B" in n))
  all_norm = np.sqrt(sum((t ** 2).sum() for t in tensors.values()))
  assert b_norm > 0
  np.testing.assert_allclose(s2["init_lora_b_norm"], b_norm, rtol=1e-5)
  np.testing.assert_allclose(s2["init_trainable_norm"], all_norm, rtol=1e-5)
  assert os.path.exists(tmp_path / "stage2" / "adapter" / "adapter_config.json")


def test_merge_then_fresh_starts_a_new_adapter_on_merged_base(tmp_path, task4_files):
  logging.set_verbosity(logging.WARNING)
  two_stage.run(_config(task4_files[0], task4_files[1], "merge_then_fresh"), str(tmp_path))
  s2 = _start(tmp_path / "stage2")
  assert s2["init_lora_b_norm"] == 0.0
  assert os.path.exists(tmp_path / "stage2" / "merged_base" / "config.json")
