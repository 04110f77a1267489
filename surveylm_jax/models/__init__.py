"""Flax ports of Qwen2/2.5, Qwen3, Llama 3.x and Mistral, loading HF checkpoints exactly."""
from surveylm_jax.models.config import (SUPPORTED_MODEL_TYPES, ModelConfig, ModelConfigError,
                                        config_from_hf_dict, load_config)
from surveylm_jax.models.hf_io import (CheckpointError, load_pretrained, open_checkpoint,
                                       params_from_tensors, save_pretrained,
                                       tensors_from_params)
from surveylm_jax.models import flops, safetensors_io
from surveylm_jax.models.safetensors_io import SafetensorsError
from surveylm_jax.models.sharded_loading import load_params, param_shardings
from surveylm_jax.models.transformer import (KVContext, Transformer, abstract_params, init_cache,
                                             init_params, logical_axes, positions_from_mask)

__all__ = [
    "SUPPORTED_MODEL_TYPES", "ModelConfig", "ModelConfigError", "config_from_hf_dict",
    "load_config", "CheckpointError", "SafetensorsError", "load_pretrained",
    "open_checkpoint", "load_params", "param_shardings", "save_pretrained",
    "params_from_tensors", "tensors_from_params", "KVContext", "Transformer", "abstract_params",
    "init_cache", "init_params", "logical_axes", "positions_from_mask",
]
