"""Analytic FLOPs count exactly the matmul weights the model has (checked against its params)."""
import math

import jax

from surveylm_jax import models
from tests.models.hf_reference import make_pair


def test_forward_flops_match_param_count():
  _, model, params = make_pair("qwen3_qknorm_headdim")
  cfg = model.config
  kernels = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params)
             if jax.tree_util.keystr(path).endswith("['kernel']")]
  matmul_weights = sum(math.prod(k.shape) for k in kernels) + cfg.vocab_size * cfg.hidden_size
  # seq_len 0: no attention term, so the count is exactly 2 FLOPs per matmul weight.
  assert models.flops.forward_flops_per_token(cfg, 0) == 2 * matmul_weights
  assert models.flops.train_step_flops(cfg, 10, 0, lora=False) == 3 * 10 * 2 * matmul_weights
