"""Hugging Face checkpoint IO: safetensors <-> the Flax params pytree.

HF stores `nn.Linear` weights as [out, in]; our projections keep [in..., out...] with heads split
out (`q_proj.kernel` is [embed, heads, head_dim]) and every layer stacked on a leading axis.
The table `_LAYER_TENSORS` is the whole mapping, used in both directions.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import jax
import ml_dtypes
import numpy as np

from surveylm_jax.models.config import (SUPPORTED_DTYPES, ModelConfig, ModelConfigError,
                                        load_config)
from surveylm_jax.models.safetensors_io import CheckpointTensors, write_sharded
from surveylm_jax.models.transformer import Transformer

_NP_DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "generation_config.json", "chat_template.jinja", "vocab.json", "merges.txt",
                   "tokenizer.model")


class CheckpointError(ValueError):
  """Weights that do not fit the architecture their config.json describes."""


@dataclasses.dataclass(frozen=True)
class _Tensor:
  hf_name: str                                   # with {i} for the layer index
  path: Tuple[str, ...]                          # path inside params["layers"] or params
  hf_shape: Callable[[ModelConfig], Tuple[int, ...]]
  to_ours: Callable[[np.ndarray, ModelConfig], np.ndarray]
  to_hf: Callable[[np.ndarray, ModelConfig], np.ndarray]
  when: Callable[[ModelConfig], bool] = lambda c: True


def _in_out(heads_attr):
  """[heads*head_dim, embed] (HF) <-> [embed, heads, head_dim] (ours)."""
  def hf_shape(c):
    return (getattr(c, heads_attr) * c.head_dim, c.hidden_size)

  def to_ours(w, c):
    return w.T.reshape(c.hidden_size, getattr(c, heads_attr), c.head_dim)

  def to_hf(k, c):
    return k.reshape(c.hidden_size, -1).T
  return hf_shape, to_ours, to_hf


def _bias(heads_attr):
  return (lambda c: (getattr(c, heads_attr) * c.head_dim,),
          lambda w, c: w.reshape(getattr(c, heads_attr), c.head_dim),
          lambda k, c: k.reshape(-1))


def _transpose(rows, cols):
  return (lambda c: (rows(c), cols(c)), lambda w, c: w.T, lambda k, c: k.T)


def _vector(size):
  return (lambda c: (size(c),), lambda w, c: w, lambda k, c: k)


_E = lambda c: c.hidden_size          # noqa: E731
_I = lambda c: c.intermediate_size    # noqa: E731
_D = lambda c: c.head_dim             # noqa: E731

_LAYER_TENSORS: List[_Tensor] = [
    _Tensor("model.layers.{i}.input_layernorm.weight", ("input_layernorm", "scale"), *_vector(_E)),
    _Tensor("model.layers.{i}.post_attention_layernorm.weight",
            ("post_attention_layernorm", "scale"), *_vector(_E)),
    _Tensor("model.layers.{i}.self_attn.q_proj.weight", ("self_attn", "q_proj", "kernel"),
            *_in_out("num_attention_heads")),
    _Tensor("model.layers.{i}.self_attn.k_proj.weight", ("self_attn", "k_proj", "kernel"),
            *_in_out("num_key_value_heads")),
    _Tensor("model.layers.{i}.self_attn.v_proj.weight", ("self_attn", "v_proj", "kernel"),
            *_in_out("num_key_value_heads")),
    _Tensor("model.layers.{i}.self_attn.o_proj.weight", ("self_attn", "o_proj", "kernel"),
            lambda c: (c.hidden_size, c.num_attention_heads * c.head_dim),
            lambda w, c: w.T.reshape(c.num_attention_heads, c.head_dim, c.hidden_size),
            lambda k, c: k.reshape(-1, c.hidden_size).T),
    _Tensor("model.layers.{i}.self_attn.q_proj.bias", ("self_attn", "q_proj", "bias"),
            *_bias("num_attention_heads"), when=lambda c: c.attention_bias),
    _Tensor("model.layers.{i}.self_attn.k_proj.bias", ("self_attn", "k_proj", "bias"),
            *_bias("num_key_value_heads"), when=lambda c: c.attention_bias),
    _Tensor("model.layers.{i}.self_attn.v_proj.bias", ("self_attn", "v_proj", "bias"),
            *_bias("num_key_value_heads"), when=lambda c: c.attention_bias),
    _Tensor("model.layers.{i}.self_attn.q_norm.weight", ("self_attn", "q_norm", "scale"),
            *_vector(_D), when=lambda c: c.qk_norm),
    _Tensor("model.layers.{i}.self_attn.k_norm.weight", ("self_attn", "k_norm", "scale"),
            *_vector(_D), when=lambda c: c.qk_norm),
    _Tensor("model.layers.{i}.mlp.gate_proj.weight", ("mlp", "gate_proj", "kernel"),
            *_transpose(_I, _E)),
    _Tensor("model.layers.{i}.mlp.up_proj.weight", ("mlp", "up_proj", "kernel"),
            *_transpose(_I, _E)),
    _Tensor("model.layers.{i}.mlp.down_proj.weight", ("mlp", "down_proj", "kernel"),
            *_transpose(_E, _I)),
]

_TOP_TENSORS: List[_Tensor] = [
    _Tensor("model.embed_tokens.weight", ("embed_tokens", "embedding"),
            lambda c: (c.vocab_size, c.hidden_size), lambda w, c: w, lambda k, c: k),
    _Tensor("model.norm.weight", ("norm", "scale"), *_vector(_E)),
    _Tensor("lm_head.weight", ("lm_head", "kernel"),
            lambda c: (c.vocab_size, c.hidden_size), lambda w, c: w.T, lambda k, c: k.T,
            when=lambda c: not c.tie_word_embeddings),
]


def _set(tree: dict, path, value):
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _get(tree: dict, path):
  for key in path:
    tree = tree[key]
  return tree


def _check_dtype(dtype: str):
  if dtype not in SUPPORTED_DTYPES:
    raise ModelConfigError(f"unsupported dtype {dtype!r}; supported: {', '.join(SUPPORTED_DTYPES)}")


def params_from_tensors(tensors, cfg: ModelConfig, *, where: str = "checkpoint") -> dict:
  """Builds the params pytree (numpy, `cfg.param_dtype`) reading one tensor at a time.

  `tensors` offers `names()`, `shape(name)` and `get(name)`. Layer tensors are written straight
  into preallocated stacked arrays, so peak host memory is the params plus one source tensor.
  """
  dtype = _NP_DTYPES[cfg.param_dtype]
  available = tensors.names()
  expected = []
  for spec in _TOP_TENSORS:
    if spec.when(cfg):
      expected.append((spec.hf_name, spec))
  for spec in _LAYER_TENSORS:
    if spec.when(cfg):
      expected.extend((spec.hf_name.format(i=i), spec) for i in range(cfg.num_hidden_layers))
  missing = [n for n, _ in expected if n not in available]
  if missing:
    raise CheckpointError(f"{where}: {len(missing)} tensor(s) missing for {cfg.model_type}: "
                          f"{', '.join(missing[:12])}{' ...' if len(missing) > 12 else ''}")
  bad = [f"{n} has shape {tuple(tensors.shape(n))}, expected {spec.hf_shape(cfg)}"
         for n, spec in expected if tuple(tensors.shape(n)) != spec.hf_shape(cfg)]
  if bad:
    raise CheckpointError(f"{where}: wrongly shaped tensor(s): " + "; ".join(bad[:12]))
  known = {n for n, _ in expected}
  # Tied checkpoints sometimes also store lm_head.weight; rotary caches are derived buffers.
  ignorable = {"lm_head.weight"} if cfg.tie_word_embeddings else set()
  extra = sorted(n for n in available - known - ignorable if "rotary_emb.inv_freq" not in n)
  if extra:
    raise CheckpointError(f"{where}: unexpected tensor(s) this architecture does not use: "
                          f"{', '.join(extra[:12])}")

  params: dict = {}
  for spec in _TOP_TENSORS:
    if spec.when(cfg):
      _set(params, spec.path, np.asarray(spec.to_ours(tensors.get(spec.hf_name), cfg), dtype))
  layers: dict = {}
  for spec in _LAYER_TENSORS:
    if not spec.when(cfg):
      continue
    stacked = None
    for i in range(cfg.num_hidden_layers):
      value = spec.to_ours(tensors.get(spec.hf_name.format(i=i)), cfg)
      if stacked is None:
        stacked = np.empty((cfg.num_hidden_layers,) + value.shape, dtype)
      stacked[i] = value
    _set(layers, spec.path, stacked)
  params["layers"] = layers
  return params


def tensors_from_params(params, cfg: ModelConfig,
                        dtype: Optional[str] = None) -> Iterator[Tuple[str, np.ndarray]]:
  """Yields (HF name, array) for every tensor of the HF layout, one at a time."""
  np_dtype = _NP_DTYPES[dtype or cfg.param_dtype]
  for spec in _TOP_TENSORS:
    if spec.when(cfg):
      yield spec.hf_name, np.asarray(spec.to_hf(np.asarray(_get(params, spec.path)), cfg),
                                     np_dtype)
  for i in range(cfg.num_hidden_layers):
    for spec in _LAYER_TENSORS:
      if spec.when(cfg):
        stacked = _get(params["layers"], spec.path)
        yield (spec.hf_name.format(i=i),
               np.ascontiguousarray(spec.to_hf(np.asarray(stacked[i]), cfg), np_dtype))


def load_pretrained(path: str, dtype: str = "float32", compute_dtype: Optional[str] = None,
                    **config_overrides) -> Tuple[Transformer, dict]:
  """Loads an HF model folder: returns (flax Module, params pytree of jax arrays)."""
  _check_dtype(dtype)
  if compute_dtype is not None:
    _check_dtype(compute_dtype)
  if not os.path.isdir(path):
    raise CheckpointError(f"{path}: not a directory")
  cfg = load_config(path, param_dtype=dtype, dtype=compute_dtype or dtype, **config_overrides)
  tensors = CheckpointTensors(path)
  params = params_from_tensors(tensors, cfg, where=path)
  return Transformer(cfg), jax.tree_util.tree_map(jax.numpy.asarray, params)


def save_pretrained(path: str, model: Transformer, params, *, dtype: Optional[str] = None,
                    tokenizer_from: Optional[str] = None,
                    max_shard_bytes: int = 4 * 1024 ** 3) -> None:
  """Writes config.json + safetensors in the HF layout (sharded above `max_shard_bytes`).

  `tokenizer_from` copies the tokenizer files of another folder so the result is a complete
  model folder that `transformers` can load.
  """
  cfg = model.config
  if dtype is not None:
    _check_dtype(dtype)
  os.makedirs(path, exist_ok=True)
  hf = cfg.to_hf_dict()
  hf["torch_dtype"] = hf["dtype"] = dtype or cfg.param_dtype
  with open(os.path.join(path, "config.json"), "w", encoding="utf-8") as f:
    json.dump(hf, f, indent=2)
  host = jax.device_get(params)
  write_sharded(path, tensors_from_params(host, cfg, dtype), max_shard_bytes)
  if tokenizer_from:
    for name in TOKENIZER_FILES:
      src = os.path.join(tokenizer_from, name)
      if os.path.exists(src) and os.path.abspath(src) != os.path.abspath(os.path.join(path, name)):
        shutil.copy(src, os.path.join(path, name))


class DictTensors:
  """Adapter over an in-memory {name: array} dict (e.g. a torch state_dict as numpy)."""

  def __init__(self, tensors: Dict[str, np.ndarray]):
    self._t = tensors

  def names(self):
    return set(self._t)

  def shape(self, name):
    return tuple(self._t[name].shape)

  def get(self, name):
    return np.asarray(self._t[name])
