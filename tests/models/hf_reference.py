"""Tiny random transformers models of each supported family, and their JAX counterparts."""
import numpy as np
import torch
import transformers

from surveylm_jax import models
from surveylm_jax.models.hf_io import DictTensors

_COMMON = dict(vocab_size=160, hidden_size=64, intermediate_size=112, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
               rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2, pad_token_id=0)

# name -> (config class, extra kwargs). Each exercises a family-specific feature.
FAMILIES = {
    "qwen2_bias_tied": (transformers.Qwen2Config, dict(tie_word_embeddings=True)),
    "qwen2_bias_untied": (transformers.Qwen2Config, dict(tie_word_embeddings=False)),
    "qwen3_qknorm_headdim": (transformers.Qwen3Config,
                             dict(head_dim=24, tie_word_embeddings=True)),
    "llama_llama3_rope": (transformers.LlamaConfig, dict(
        tie_word_embeddings=False,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 64})),
    "mistral_sliding_window": (transformers.MistralConfig,
                               dict(sliding_window=5, tie_word_embeddings=False)),
}


def make_pair(name, seed=0):
  """(torch model in eval mode, jax Transformer, params) sharing the same random weights."""
  cls, extra = FAMILIES[name]
  torch.manual_seed(seed)
  hf_cfg = cls(**_COMMON, **extra)
  hf_cfg._attn_implementation = "eager"
  torch_model = transformers.AutoModelForCausalLM.from_config(hf_cfg).eval()
  with torch.no_grad():   # random non-trivial norms and biases, so they are really tested
    for n, p in torch_model.named_parameters():
      if n.endswith("norm.weight"):
        p.copy_(1.0 + 0.1 * torch.randn_like(p))
      if n.endswith(".bias"):
        p.copy_(0.1 * torch.randn_like(p))
  cfg = models.config_from_hf_dict(hf_cfg.to_dict())
  state = {k: v.detach().numpy() for k, v in torch_model.state_dict().items()}
  params = models.params_from_tensors(DictTensors(state), cfg)
  return torch_model, models.Transformer(cfg), params


def padded_batch(vocab=160, seed=0, length=14):
  """Left-padded batch: row 0 full, row 1 with 4 pads, row 2 with 9 pads."""
  rng = np.random.RandomState(seed)
  ids = rng.randint(3, vocab, (3, length)).astype(np.int64)
  mask = np.ones_like(ids)
  for row, pads in ((1, 4), (2, 9)):
    mask[row, :pads] = 0
    ids[row, :pads] = 0
  positions = np.maximum(np.cumsum(mask, -1) - 1, 0)
  return ids, mask, positions


def torch_logits(torch_model, ids, mask, positions):
  with torch.no_grad():
    return torch_model(torch.tensor(ids), attention_mask=torch.tensor(mask),
                       position_ids=torch.tensor(positions)).logits.float().numpy()
