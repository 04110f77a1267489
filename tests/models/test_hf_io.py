"""save_pretrained round trips through transformers; bad checkpoints give clear errors."""
import json
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from surveylm_jax import models
from surveylm_jax.models.hf_io import DictTensors
from tests.models.hf_reference import make_pair, padded_batch, torch_logits


@pytest.mark.parametrize("name", ["qwen2_bias_untied", "qwen3_qknorm_headdim",
                                  "llama_llama3_rope", "mistral_sliding_window"])
def test_save_pretrained_loads_in_transformers_with_same_logits(tmp_path, name):
  _, model, params = make_pair(name)
  # A tiny shard limit forces the sharded layout (index + several files) to be exercised.
  models.save_pretrained(str(tmp_path), model, params, max_shard_bytes=100_000)
  assert os.path.exists(tmp_path / "model.safetensors.index.json")
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path),
                                                               dtype=torch.float32).eval()
  ids, mask, positions = padded_batch()
  ours = np.asarray(model.apply({"params": params}, jnp.asarray(ids),
                                attention_mask=jnp.asarray(mask)))
  ref = torch_logits(reloaded, ids, mask, positions)
  assert np.abs(ours - ref)[mask.astype(bool)].max() <= 1e-4
  # ... and our own loader reads the saved folder back bit-exactly.
  model2, params2 = models.load_pretrained(str(tmp_path))
  assert model2.config.replace() == model.config
  for a, b in zip(*(map(np.asarray, __import__("jax").tree_util.tree_leaves(p))
                    for p in (params, params2))):
    np.testing.assert_array_equal(a, b)


def test_save_bfloat16_single_file(tmp_path):
  _, model, params = make_pair("qwen2_bias_tied")
  models.save_pretrained(str(tmp_path), model, params, dtype="bfloat16")
  assert os.path.exists(tmp_path / "model.safetensors")
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path))
  assert reloaded.dtype == torch.bfloat16
  m16, p16 = models.load_pretrained(str(tmp_path), dtype="bfloat16")
  assert p16["embed_tokens"]["embedding"].dtype == jnp.bfloat16


@pytest.fixture
def saved(tmp_path):
  _, model, params = make_pair("llama_llama3_rope")
  models.save_pretrained(str(tmp_path), model, params)
  return tmp_path


def _edit_config(folder, **changes):
  path = folder / "config.json"
  cfg = json.loads(path.read_text())
  cfg.update(changes)
  path.write_text(json.dumps(cfg))


def test_error_folder_without_config(tmp_path):
  with pytest.raises(models.ModelConfigError, match="no config.json"):
    models.load_pretrained(str(tmp_path))


def test_error_folder_without_weights(saved):
  os.remove(saved / "model.safetensors")
  with pytest.raises(models.SafetensorsError, match="no weights found"):
    models.load_pretrained(str(saved))


def test_error_unsupported_model_type(saved):
  _edit_config(saved, model_type="gpt2")
  with pytest.raises(models.ModelConfigError, match="unsupported model_type 'gpt2'.*qwen2, qwen3, llama, mistral"):
    models.load_pretrained(str(saved))


def test_error_unsupported_rope_type(saved):
  _edit_config(saved, rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4},
               rope_scaling=None)
  with pytest.raises(models.ModelConfigError, match="unsupported rope scaling type 'yarn'"):
    models.load_pretrained(str(saved))


def test_error_unsupported_dtype(saved):
  with pytest.raises(models.ModelConfigError, match="unsupported dtype 'int8'"):
    models.load_pretrained(str(saved), dtype="int8")


def _rewrite_weights(folder, edit):
  tensors = models.safetensors_io.CheckpointTensors(str(folder))
  state = {n: np.array(tensors.get(n)) for n in tensors.names()}
  edit(state)
  models.safetensors_io.write_safetensors(str(folder / "model.safetensors"), state.items())


def test_error_missing_tensor_lists_names(saved):
  _rewrite_weights(saved, lambda s: (s.pop("model.layers.1.mlp.up_proj.weight"),
                                     s.pop("model.norm.weight")))
  with pytest.raises(models.CheckpointError) as err:
    models.load_pretrained(str(saved))
  assert "model.layers.1.mlp.up_proj.weight" in str(err.value)
  assert "model.norm.weight" in str(err.value)


def test_error_wrongly_shaped_tensor(saved):
  def edit(s):
    s["model.layers.0.self_attn.k_proj.weight"] = np.zeros((5, 64), np.float32)
  _rewrite_weights(saved, edit)
  with pytest.raises(models.CheckpointError,
                     match=r"model.layers.0.self_attn.k_proj.weight has shape \(5, 64\), "
                           r"expected \(32, 64\)"):
    models.load_pretrained(str(saved))


def test_error_unexpected_tensor(saved):
  _rewrite_weights(saved, lambda s: s.update({"model.layers.0.mlp.extra.weight": np.zeros(3)}))
  with pytest.raises(models.CheckpointError, match="model.layers.0.mlp.extra.weight"):
    models.load_pretrained(str(saved))


def test_config_fields_read_from_hf():
  cfg = models.config_from_hf_dict({
      "model_type": "qwen3", "vocab_size": 10, "hidden_size": 32, "intermediate_size": 8,
      "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
      "head_dim": 16, "rope_theta": 1e6, "tie_word_embeddings": True,
      "use_sliding_window": True, "sliding_window": 7, "max_window_layers": 1,
      "eos_token_id": [3, 4]})
  assert cfg.head_dim == 16 and cfg.qk_norm and not cfg.attention_bias
  assert cfg.sliding_windows == (None, 7)
  assert cfg.eos_token_ids == (3, 4) and cfg.rope_theta == 1e6
  legacy = models.config_from_hf_dict({
      "model_type": "llama", "vocab_size": 10, "hidden_size": 32, "intermediate_size": 8,
      "num_hidden_layers": 1, "num_attention_heads": 4, "rope_theta": 5e5,
      "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                       "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}})
  assert legacy.rope_scaling.rope_type == "llama3" and legacy.rope_theta == 5e5
  assert legacy.num_key_value_heads == 4 and legacy.head_dim == 8
