"""PEFT interop against the real `peft` (PyTorch, float32) on tiny qwen2 and llama twins.

Tolerance: logits within 1e-4 (absolute) at every real (non-pad) position.
"""
import json
import os
import shutil

import jax
import numpy as np
import peft
import pytest
import torch
import transformers

from surveylm_jax import lora
from surveylm_jax.models.safetensors_io import SafetensorsFile, write_safetensors

TOL = 1e-4
ALL = list(lora.ALL_PROJECTIONS)

# case -> (family, peft LoraConfig kwargs)
CASES = {
    "qwen2_all_projections": ("qwen2", dict(r=4, lora_alpha=8, target_modules=ALL)),
    "llama_rslora": ("llama", dict(r=8, lora_alpha=16, use_rslora=True, target_modules=ALL)),
    "llama_q_v_only": ("llama", dict(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"])),
}


def _peft_model(twin, **kwargs):
  """A PEFT model with non-zero random A and B (init_lora_weights=False)."""
  torch.manual_seed(1)
  config = peft.LoraConfig(task_type="CAUSAL_LM", init_lora_weights=False, **kwargs)
  return peft.get_peft_model(twin.torch_model(), config).eval()


@pytest.fixture(scope="module")
def peft_adapters(twins, tmp_path_factory):
  """case -> (adapter dir written by peft, PEFT logits on the test batch)."""
  out = {}
  for case, (family, kwargs) in CASES.items():
    model = _peft_model(twins[family], **kwargs)
    folder = str(tmp_path_factory.mktemp(case))
    model.save_pretrained(folder)
    out[case] = folder
  return out


def _check_close(ours, ref, mask):
  real = np.asarray(mask).astype(bool)
  diff = float(np.abs(ours - ref)[real].max())
  assert diff <= TOL, f"max abs logit diff {diff:.3g} > {TOL}"
  print(f"max |logit diff| = {diff:.2e}")      # shown with `pytest -s`
  return diff


@pytest.mark.parametrize("case", list(CASES))
def test_load_peft_matches_peft_logits(case, twins, peft_adapters, helpers):
  family, kwargs = CASES[case]
  twin = twins[family]
  ids, mask = helpers.batch(vocab=96)
  peft_model = peft.PeftModel.from_pretrained(twin.torch_model(), peft_adapters[case]).eval()
  ref = helpers.torch_logits(peft_model, ids, mask)

  lora_params, cfg = lora.load_peft(peft_adapters[case], twin.params)
  assert cfg.rank == kwargs["r"] and cfg.alpha == kwargs["lora_alpha"]
  assert cfg.use_rslora == kwargs.get("use_rslora", False)
  assert set(cfg.targets) == set(kwargs["target_modules"])
  ours = helpers.logits(twin.model, twin.params, ids, mask, lora_params, cfg)
  base = helpers.logits(twin.model, twin.params, ids, mask)
  assert np.abs(base - ref)[np.asarray(mask, bool)].max() > 100 * TOL   # the adapter matters
  _check_close(ours, ref, mask)


@pytest.mark.parametrize("case", list(CASES))
def test_save_peft_loads_in_peft_with_same_logits(case, twins, helpers, tmp_path):
  family, kwargs = CASES[case]
  twin = twins[family]
  ids, mask = helpers.batch(vocab=96)
  cfg = lora.LoraConfig(rank=kwargs["r"], alpha=kwargs["lora_alpha"],
                        targets=tuple(kwargs["target_modules"]),
                        use_rslora=kwargs.get("use_rslora", False))
  lora_params = helpers.random_adapter(twin.params, cfg, seed=4)
  ours = helpers.logits(twin.model, twin.params, ids, mask, lora_params, cfg)

  lora.save_peft(str(tmp_path), lora_params, cfg, base_model_name_or_path=f"tiny-{family}")
  peft_model = peft.PeftModel.from_pretrained(twin.torch_model(), str(tmp_path)).eval()
  # PEFT holds exactly our factors ...
  state = peft.get_peft_model_state_dict(peft_model)
  expected = lora.peft_tensors(lora_params, cfg)
  assert set(state) == set(expected)
  for name, value in expected.items():
    np.testing.assert_array_equal(state[name].numpy(), value, err_msg=name)
  # ... and computes the same function.
  _check_close(ours, helpers.torch_logits(peft_model, ids, mask), mask)
  loaded = peft_model.peft_config["default"]
  assert (loaded.r, loaded.lora_alpha, loaded.use_rslora) == (cfg.rank, cfg.alpha, cfg.use_rslora)
  assert loaded.base_model_name_or_path == f"tiny-{family}"


def test_bin_adapter_loads_like_safetensors(twins, tmp_path):
  twin = twins["llama"]
  model = _peft_model(twin, r=2, lora_alpha=4, target_modules=["k_proj", "down_proj"])
  model.save_pretrained(str(tmp_path / "st"))
  model.save_pretrained(str(tmp_path / "bin"), safe_serialization=False)
  assert os.path.exists(tmp_path / "bin" / "adapter_model.bin")
  from_st, cfg_st = lora.load_peft(str(tmp_path / "st"), twin.params)
  from_bin, cfg_bin = lora.load_peft(str(tmp_path / "bin"), twin.params)
  assert cfg_st == cfg_bin
  jax.tree_util.tree_map(np.testing.assert_array_equal, from_st, from_bin)


def test_merged_export_loads_in_transformers(twins, peft_adapters, helpers, tmp_path):
  twin = twins["qwen2"]
  ids, mask = helpers.batch(vocab=96)
  lora_params, cfg = lora.load_peft(peft_adapters["qwen2_all_projections"], twin.params)
  lora.save_merged(str(tmp_path), twin.model, twin.params, lora_params, cfg)
  merged = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path)).float().eval()
  peft_model = peft.PeftModel.from_pretrained(
      twin.torch_model(), peft_adapters["qwen2_all_projections"]).eval()
  _check_close(helpers.torch_logits(merged, ids, mask),
               helpers.torch_logits(peft_model, ids, mask), mask)


def test_merge_lora_cli(twins, peft_adapters, tmp_path):
  from tools import merge_lora
  twin = twins["llama"]
  base = tmp_path / "base"
  twin.torch_model().save_pretrained(str(base))
  out = tmp_path / "merged"
  assert merge_lora.main(["--base", str(base), "--adapter", peft_adapters["llama_q_v_only"],
                          "--out", str(out)]) == 0
  merged = transformers.AutoModelForCausalLM.from_pretrained(str(out)).float().eval()
  reference = peft.PeftModel.from_pretrained(twin.torch_model(),
                                             peft_adapters["llama_q_v_only"]).merge_and_unload()
  for name, value in reference.state_dict().items():
    np.testing.assert_allclose(merged.state_dict()[name].numpy(), value.numpy(), atol=1e-6,
                               err_msg=name)


# --- bad input -----------------------------------------------------------------------------------

@pytest.fixture
def adapter_copy(peft_adapters, tmp_path):
  """A writable copy of the llama q/v adapter (r=4, 3 layers)."""
  folder = tmp_path / "adapter"
  shutil.copytree(peft_adapters["llama_q_v_only"], folder)
  return folder


def _edit_config(folder, **changes):
  path = folder / "adapter_config.json"
  config = json.loads(path.read_text())
  config.update(changes)
  path.write_text(json.dumps(config))


def _rewrite_tensors(folder, edit):
  path = str(folder / "adapter_model.safetensors")
  st = SafetensorsFile(path)
  tensors = {name: np.array(st.get(name)) for name in st.names()}
  del st
  write_safetensors(path, sorted(edit(tensors).items()))


def test_missing_folder_and_files(adapter_copy, twins, tmp_path):
  params = twins["llama"].params
  with pytest.raises(lora.PeftAdapterError, match="adapter folder does not exist"):
    lora.load_peft(str(tmp_path / "nowhere"), params)
  os.remove(adapter_copy / "adapter_model.safetensors")
  with pytest.raises(lora.PeftAdapterError,
                     match="missing adapter weights: expected adapter_model.safetensors or "
                           "adapter_model.bin"):
    lora.load_peft(str(adapter_copy), params)
  os.remove(adapter_copy / "adapter_config.json")
  with pytest.raises(lora.PeftAdapterError, match="missing adapter_config.json"):
    lora.load_peft(str(adapter_copy), params)


def test_invalid_config_json(adapter_copy, twins):
  (adapter_copy / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 4,}')
  with pytest.raises(lora.PeftAdapterError, match=r"adapter_config.json: invalid JSON at line 1"):
    lora.load_peft(str(adapter_copy), twins["llama"].params)


@pytest.mark.parametrize("changes, message", [
    (dict(peft_type="LOHA"), "peft_type 'LOHA' is not supported; supported: 'LORA'"),
    (dict(use_dora=True), "use_dora=True \\(DoRA"),
    (dict(modules_to_save=["lm_head"]), "modules_to_save=\\['lm_head'\\]"),
    (dict(bias="lora_only"), "bias='lora_only'"),
    (dict(rank_pattern={"q_proj": 8}), "rank_pattern"),
    (dict(layers_to_transform=[0, 1]), "layers_to_transform"),
    (dict(init_lora_weights="pissa"), "init_lora_weights='pissa'"),
    (dict(r="four"), "field 'r' must be a number"),
])
def test_unsupported_peft_features_are_named(adapter_copy, twins, changes, message):
  _edit_config(adapter_copy, **changes)
  with pytest.raises(lora.PeftAdapterError, match=message):
    lora.load_peft(str(adapter_copy), twins["llama"].params)


def test_real_dora_adapter_is_rejected(twins, tmp_path):
  model = _peft_model(twins["llama"], r=2, lora_alpha=4, target_modules=["q_proj"], use_dora=True)
  model.save_pretrained(str(tmp_path))
  with pytest.raises(lora.PeftAdapterError, match="unsupported PEFT feature.*DoRA"):
    lora.load_peft(str(tmp_path), twins["llama"].params)


def test_rank_in_config_disagreeing_with_tensors(adapter_copy, twins):
  _edit_config(adapter_copy, r=8)
  with pytest.raises(lora.PeftAdapterError) as e:
    lora.load_peft(str(adapter_copy), twins["llama"].params)
  msg = str(e.value)
  assert "r=8" in msg
  assert ("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight has shape (4, 32), "
          "expected (8, 32)") in msg
  assert "layers.2.self_attn.v_proj.lora_B.weight has shape (24, 4), expected (24, 8)" in msg


def test_adapter_for_another_base_lists_mismatches(peft_adapters, twins):
  # The llama adapter (3 layers, q out 48) on the qwen2 base (2 layers, q out 32).
  with pytest.raises(lora.PeftAdapterError) as e:
    lora.load_peft(peft_adapters["llama_q_v_only"], twins["qwen2"].params)
  msg = str(e.value)
  assert "does not fit the base model" in msg
  assert "present for layer(s) [2], base has only 2 layers" in msg
  assert "layers.0.self_attn.q_proj.lora_B.weight has shape (48, 4), expected (32, 4)" in msg


def test_declared_target_without_weights_is_an_error(adapter_copy, twins):
  _rewrite_tensors(adapter_copy, lambda t: {k: v for k, v in t.items() if "v_proj" not in k})
  with pytest.raises(lora.PeftAdapterError,
                     match="target_modules includes v_proj, but the adapter weights hold no "
                           "tensors for it"):
    lora.load_peft(str(adapter_copy), twins["llama"].params)


def test_missing_layer_is_an_error(adapter_copy, twins):
  _rewrite_tensors(adapter_copy, lambda t: {k: v for k, v in t.items() if ".layers.1." not in k})
  with pytest.raises(lora.PeftAdapterError, match=r"missing for layer\(s\) \[1\]"):
    lora.load_peft(str(adapter_copy), twins["llama"].params)


def test_lora_on_unsupported_modules_lists_them(twins, tmp_path):
  model = _peft_model(twins["llama"], r=2, lora_alpha=4, target_modules=["q_proj", "lm_head"])
  model.save_pretrained(str(tmp_path))
  with pytest.raises(lora.PeftAdapterError) as e:
    lora.load_peft(str(tmp_path), twins["llama"].params)
  msg = str(e.value)
  assert "base_model.model.lm_head.lora_A.weight" in msg
  assert "supported modules: self_attn.q_proj, self_attn.k_proj" in msg
