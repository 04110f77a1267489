"""Stage I -> Stage II adapter stacking: continue the adapter, or merge it and start fresh."""
import jax
import numpy as np
import pytest

from surveylm_jax import lora


@pytest.fixture(scope="module")
def stage1(tiny, tiny_adapter, tmp_path_factory):
  """A trained-looking Stage I adapter (random B), in memory and as a PEFT folder."""
  cfg, _, lora_params = tiny_adapter
  folder = str(tmp_path_factory.mktemp("stage1"))
  lora.save_peft(folder, lora_params, cfg, base_model_name_or_path="tiny")
  return cfg, lora_params, folder


def test_continue_keeps_training_the_stage1_adapter(tiny, stage1):
  cfg, lora_params, folder = stage1
  params, start, start_cfg = lora.stack_stages("continue", folder, tiny.params,
                                               cfg.replace(dropout=0.1))
  assert params is tiny.params
  jax.tree_util.tree_map(np.testing.assert_array_equal, start, lora_params)
  assert start_cfg == cfg.replace(dropout=0.1)      # Stage II's dropout, Stage I's adapter


def test_continue_refuses_a_different_adapter_config(tiny, stage1):
  cfg, lora_params, _ = stage1
  with pytest.raises(lora.LoraError, match="rank: stage I 4 vs stage II 8.*'merge_then_fresh'"):
    lora.continue_adapter((lora_params, cfg), tiny.params, cfg.replace(rank=8))
  with pytest.raises(lora.LoraError, match="targets: stage I"):
    lora.continue_adapter((lora_params, cfg), tiny.params, cfg.replace(targets=("q_proj",)))


def test_merge_then_fresh_starts_from_the_stage1_function(tiny, stage1, helpers):
  cfg, lora_params, folder = stage1
  ids, mask = helpers.batch()
  stage2_cfg = lora.LoraConfig(rank=2, alpha=4, targets=("q_proj", "v_proj"))
  params, fresh, start_cfg = lora.stack_stages("merge_then_fresh", folder, tiny.params,
                                               stage2_cfg, jax.random.PRNGKey(5))
  assert start_cfg == stage2_cfg
  assert lora.adapted_modules(fresh) == ["q_proj", "v_proj"]
  assert not any(np.any(np.asarray(f["b"])) for _, _, f in lora.core.iter_modules(fresh))
  stage1_logits = helpers.logits(tiny.model, tiny.params, ids, mask, lora_params, cfg)
  stage2_start = helpers.logits(tiny.model, params, ids, mask, fresh, stage2_cfg)
  np.testing.assert_allclose(stage2_start, stage1_logits, rtol=0, atol=1e-5)


def test_merge_then_fresh_needs_an_rng_and_modes_are_listed(tiny, stage1):
  cfg, lora_params, _ = stage1
  with pytest.raises(lora.LoraError, match="needs an rng"):
    lora.merge_then_fresh((lora_params, cfg), tiny.params, cfg)
  with pytest.raises(lora.LoraError, match="valid: continue, merge_then_fresh"):
    lora.stack_stages("stack", (lora_params, cfg), tiny.params, cfg)
