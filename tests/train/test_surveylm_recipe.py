"""The SurveyLM recipe (configs/surveylm_qwen25_7b.py): its values are the paper's, its paths are
the release's layout, Stage II continues Stage I's adapter, and its train step, with every recipe
setting and a tiny Qwen2 model in place of the 7B, compiles ahead of time for a TPU topology."""
import os

import ml_collections
import pytest

from configs import base, surveylm_qwen25_7b as recipe
from surveylm_jax.data.task_parsers import task_from_path
from surveylm_jax.train import aot
from surveylm_jax.train.optimizer import learning_rate_schedule

SEVEN = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _paths(spec):
  return [p for p in spec.split(",") if p]


def _keys(cfg, prefix=""):
  out = set()
  for key, value in cfg.items():
    out.add(prefix + key)
    if isinstance(value, ml_collections.ConfigDict) and key != "random_init":
      out |= _keys(value, f"{prefix}{key}.")
  return out


def test_recipe_values_are_the_papers():
  for stage in recipe.STAGES:
    c = recipe.get_config(stage)
    assert c.model.path == "checkpoints/qwen2.5-7b-instruct"
    assert (c.model.dtype, c.model.compute_dtype) == ("bfloat16", "bfloat16")
    assert c.lora.enabled and not c.train.full_finetune
    assert (c.lora.rank, c.lora.alpha, c.lora.dropout) == (8, 16.0, 0.0)
    assert sorted(c.lora.targets) == sorted(SEVEN)
    assert (c.train.lr, c.train.warmup_fraction) == (1e-4, 0.1)
    assert c.data.seq_len == 2048
    assert (c.data.batch_size, c.train.microbatches) == (16, 2)
    assert c.train.epochs == (1 if stage == "stage1" else 3)
  # The schedule these settings give: linear warmup over 10% of the steps, then cosine to 0.
  schedule = learning_rate_schedule(1e-4, 100, 0.1)
  assert float(schedule(0)) == 0.0
  assert float(schedule(10)) == pytest.approx(1e-4)
  assert float(schedule(55)) == pytest.approx(0.5e-4, rel=1e-3)
  assert float(schedule(100)) == pytest.approx(0.0, abs=1e-12)


def test_recipe_sets_only_base_fields_plus_its_roots():
  # Configs are locked on the command line: a field base.py lacks would be unreachable there.
  assert _keys(recipe.get_config("task4")) - _keys(base.get_config()) == {"data_root", "run_root"}
  with pytest.raises(ValueError, match="unknown stage"):
    recipe.get_config("task5")


def test_paths_follow_the_release_layout_and_stage_two_continues_stage_one():
  s1 = recipe.get_config()
  stage1_tasks = [task_from_path(p) for p in _paths(s1.data.train)]
  assert stage1_tasks == ["foundation_quan", "foundation_qual"]
  assert s1.data.eval == "" and s1.lora.init_from == ""
  # launch.train writes WORKDIR/adapter; the recipe's Stage I workdir is run_root/stage1.
  stage1_adapter = os.path.join(s1.run_root, "stage1", "adapter")
  for stage in recipe.STAGES[1:]:
    c = recipe.get_config(stage)
    files = _paths(c.data.train) + _paths(c.data.eval)
    assert [task_from_path(p) for p in files] == [stage, stage]
    assert [os.path.basename(p) for p in files] == ["train.json", "test.json"]
    assert all(p.startswith("data/alignsurvey/") for p in files)
    assert c.lora.init_from == stage1_adapter and c.lora.stacking == "continue"
    assert c.eval.adapter == os.path.join(c.run_root, stage, "adapter")
  # Moving the roots moves every path (command-line overrides set these fields after get_config).
  c = recipe.get_config("task4")
  c.data_root, c.run_root = "/data/as", "/runs/r"
  assert c.data.train == "/data/as/task4/individual/train.json" == c.eval.train_data
  assert c.data.eval == "/data/as/task4/individual/test.json"
  assert c.lora.init_from == "/runs/r/stage1/adapter"


def test_recipe_train_step_compiles_for_tpu_v5e_2x2():
  assert os.environ.get("JAX_PLATFORMS") == "cpu"
  config = recipe.get_config("stage1")
  # Only the model shrinks (same family: qwen2, q/k/v biases, untied head); dtype, LoRA, optimizer,
  # remat, mesh, batch and microbatches stay the recipe's.
  config.model.random_init = ml_collections.ConfigDict(dict(
      model_type="qwen2", vocab_size=512, hidden_size=64, intermediate_size=128,
      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
      rope_theta=1e6, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=2))
  devices = aot.topology_devices("v5e:2x2")
  assert len(devices) == 4
  compiled = aot.compile_train_step(config, devices, batch_rows=config.data.batch_size, seq_len=128)
  summary = aot.summarize(compiled)
  assert summary["xla_flops"] > 0
  assert 0 < summary["peak_bytes_estimate"] < 16 * 2 ** 30
