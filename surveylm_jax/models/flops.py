"""Analytic matmul FLOPs of the decoder, for throughput and MFU figures.

XLA's `cost_analysis()` counts the body of a `scan` once, not once per layer, so it undercounts
a scanned model by about the layer count; these closed forms are what throughput is measured in.
"""
from __future__ import annotations

from surveylm_jax.models.config import ModelConfig


def forward_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
  """2·(projection + LM-head weights) plus causal attention scores and mixing, per token."""
  h, kv, d, e, i = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim,
                    cfg.hidden_size, cfg.intermediate_size)
  per_layer = e * (h * d) * 2 + e * (kv * d) * 2 + 3 * e * i      # q,o + k,v + gate,up,down
  weights = cfg.num_hidden_layers * per_layer + e * cfg.vocab_size
  # QK^T and PV over on average seq_len/2 visible keys (causal), 2 FLOPs per multiply-add.
  attention = cfg.num_hidden_layers * 2 * 2 * h * d * (seq_len / 2)
  return 2.0 * weights + attention


def train_step_flops(cfg: ModelConfig, tokens: int, seq_len: int, *, lora: bool) -> float:
  """Forward + backward. Full fine-tuning: 3x forward (activation and weight gradients);
  LoRA: 2x forward (no weight gradients for frozen matrices; the adapters are negligible)."""
  return (2.0 if lora else 3.0) * forward_flops_per_token(cfg, seq_len) * tokens
