"""Hugging Face model folders <-> (Flax module, params pytree), local or remote (epath).

The mapping between the HF tensor layout and ours is the table in `hf_layout`; loading into
(sharded) jax arrays is `sharded_loading`; this module opens and writes whole folders.
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Dict, Iterator, Optional, Tuple

import jax
import numpy as np

from surveylm_jax import paths
from surveylm_jax.models import hf_layout, sharded_loading
from surveylm_jax.models.config import (SUPPORTED_DTYPES, ModelConfig, ModelConfigError,
                                        load_config)
from surveylm_jax.models.hf_layout import CheckpointError
from surveylm_jax.models.safetensors_io import CheckpointTensors, write_sharded
from surveylm_jax.models.transformer import Transformer

__all__ = ["CheckpointError", "DictTensors", "TOKENIZER_FILES", "copy_tokenizer",
           "has_tokenizer", "load_pretrained", "open_checkpoint", "params_from_tensors",
           "save_pretrained", "tensors_from_params"]

_NP_DTYPES = sharded_loading.NP_DTYPES
_get, _set = sharded_loading.tree_get, sharded_loading.tree_set
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "generation_config.json", "chat_template.jinja", "vocab.json", "merges.txt",
                   "tokenizer.model", "added_tokens.json")
# Without one of these a folder has no tokenizer `transformers` can build.
_TOKENIZER_CORE = ("tokenizer.json", "vocab.json", "tokenizer.model")


def _check_dtype(dtype: str):
  if dtype not in SUPPORTED_DTYPES:
    raise ModelConfigError(f"unsupported dtype {dtype!r}; supported: {', '.join(SUPPORTED_DTYPES)}")


def open_checkpoint(path: paths.PathLike, dtype: str = "float32",
                    compute_dtype: Optional[str] = None,
                    **config_overrides) -> Tuple[ModelConfig, CheckpointTensors]:
  """Config plus validated tensors of an HF folder; nothing is read beyond the headers.

  Every error a load can meet in the files (missing folder, config, shard or tensor; a
  truncated file; an inconsistent header or index; a tensor the architecture does not expect
  or with the wrong shape) is raised here, before any compute.
  """
  _check_dtype(dtype)
  if compute_dtype is not None:
    _check_dtype(compute_dtype)
  folder = paths.as_path(path)
  if not folder.exists():
    raise CheckpointError(f"{path}: model folder does not exist")
  if not folder.is_dir():
    raise CheckpointError(f"{path}: not a directory")
  cfg = load_config(folder, param_dtype=dtype, dtype=compute_dtype or dtype, **config_overrides)
  tensors = CheckpointTensors(folder)
  hf_layout.check_tensors(tensors, cfg, os.fspath(path))
  return cfg, tensors


def load_pretrained(path: paths.PathLike, dtype: str = "float32",
                    compute_dtype: Optional[str] = None, mesh=None, rules=None,
                    **config_overrides) -> Tuple[Transformer, dict]:
  """Loads an HF model folder: returns (flax Module, params pytree of jax arrays).

  `dtype` is the param dtype (the file's dtype is cast on the fly), `compute_dtype` the matmul
  dtype (default: `dtype`). With `mesh` and `rules` (the logical-axis rules table, config
  `sharding_rules`) every param is created directly in its NamedSharding and each process
  reads only the slices its devices own; without them params land on the first local device.
  """
  if (mesh is None) != (rules is None):
    raise ValueError("load_pretrained: pass both mesh and rules, or neither")
  cfg, tensors = open_checkpoint(path, dtype, compute_dtype, **config_overrides)
  model = Transformer(cfg)
  shardings = (sharded_loading.param_shardings(model, mesh, rules) if mesh is not None
               else None)
  return model, sharded_loading.load_params(tensors, cfg, shardings, where=os.fspath(path))


def params_from_tensors(tensors, cfg: ModelConfig, *, where: str = "checkpoint") -> dict:
  """The params pytree as host numpy arrays (`cfg.param_dtype`), one source tensor at a time.

  `tensors` offers `names()`, `shape(name)` and `get(name)` (e.g. `DictTensors` over a torch
  state_dict). Layer tensors go straight into preallocated stacked arrays, so peak host memory
  is the params plus one source tensor.
  """
  hf_layout.check_tensors(tensors, cfg, where)
  dtype = _NP_DTYPES[cfg.param_dtype]
  params: dict = {}
  for spec in hf_layout.TOP_TENSORS:
    if spec.when(cfg):
      _set(params, spec.path, np.asarray(spec.to_ours(tensors.get(spec.hf_name), cfg), dtype))
  layers: dict = {}
  for spec in hf_layout.LAYER_TENSORS:
    if spec.when(cfg):
      stacked = np.empty((cfg.num_hidden_layers,) + spec.our_shape(cfg), dtype)
      for i in range(cfg.num_hidden_layers):
        stacked[i] = spec.to_ours(tensors.get(spec.hf_name.format(i=i)), cfg)
      _set(layers, spec.path, stacked)
  params["layers"] = layers
  return params


def tensors_from_params(params, cfg: ModelConfig,
                        dtype: Optional[str] = None) -> Iterator[Tuple[str, np.ndarray]]:
  """Yields (HF name, array) for every tensor of the HF layout, one at a time."""
  np_dtype = _NP_DTYPES[dtype or cfg.param_dtype]
  for spec in hf_layout.TOP_TENSORS:
    if spec.when(cfg):
      yield spec.hf_name, np.ascontiguousarray(
          spec.to_hf(np.asarray(_get(params, spec.path)), cfg), np_dtype)
  for i in range(cfg.num_hidden_layers):
    for spec in hf_layout.LAYER_TENSORS:
      if spec.when(cfg):
        stacked = _get(params["layers"], spec.path)
        yield (spec.hf_name.format(i=i),
               np.ascontiguousarray(spec.to_hf(np.asarray(stacked[i]), cfg), np_dtype))


def save_pretrained(path: paths.PathLike, model: Transformer, params, *,
                    dtype: Optional[str] = None, tokenizer_from: Optional[paths.PathLike] = None,
                    max_shard_bytes: int = 4 * 1024 ** 3) -> None:
  """Writes a Hugging Face model folder: config.json, safetensors (sharded above
  `max_shard_bytes`) and, with `tokenizer_from`, the tokenizer files.

  `tokenizer_from` is the folder (local or remote) whose tokenizer files are copied, or a hub
  id `transformers` can resolve; with it the result loads with `AutoTokenizer` and
  `AutoModelForCausalLM` alone. Params carry no memory of the folder they were loaded from, so
  a caller that loaded them from a folder (or trained with a tokenizer) must pass it here;
  without it only the weights and config are written.
  """
  cfg = model.config
  if dtype is not None:
    _check_dtype(dtype)
  folder = paths.as_path(path)
  paths.makedirs(folder)   # locally; an object store has no folders to make
  # The tokenizer goes first: a bad source fails before gigabytes of weights are written.
  if tokenizer_from:
    copy_tokenizer(tokenizer_from, folder)
  hf = cfg.to_hf_dict()
  hf["torch_dtype"] = hf["dtype"] = dtype or cfg.param_dtype
  paths.write_atomic(folder / "config.json", json.dumps(hf, indent=2))
  write_sharded(folder, tensors_from_params(jax.device_get(params), cfg, dtype), max_shard_bytes)


def has_tokenizer(folder: paths.PathLike) -> bool:
  """Whether `folder` holds tokenizer files `transformers` can build a tokenizer from."""
  folder = paths.as_path(folder)
  return folder.is_dir() and any((folder / name).exists() for name in _TOKENIZER_CORE)


def copy_tokenizer(source: paths.PathLike, folder: paths.PathLike) -> None:
  """Puts the tokenizer files of `source` (a folder, or a hub id) into `folder`."""
  folder = paths.as_path(folder)
  src = paths.as_path(source)
  if not src.is_dir():
    _save_hub_tokenizer(os.fspath(source), folder)
    return
  present = [name for name in TOKENIZER_FILES if (src / name).exists()]
  if not has_tokenizer(src):
    raise CheckpointError(f"{source}: no tokenizer files to copy (expected one of "
                          f"{', '.join(_TOKENIZER_CORE)})")
  for name in present:
    target = folder / name
    if os.fspath(src / name) != os.fspath(target):
      paths.write_atomic(target, (src / name).read_bytes())


def _save_hub_tokenizer(name: str, folder) -> None:
  import transformers  # noqa: PLC0415 -- only a hub id needs transformers to resolve it
  try:
    tokenizer = transformers.AutoTokenizer.from_pretrained(name)
  except (OSError, ValueError) as e:
    raise CheckpointError(f"tokenizer {name!r} is neither a folder nor a tokenizer "
                          f"transformers can load ({type(e).__name__}: {e})") from None
  with tempfile.TemporaryDirectory() as local:
    tokenizer.save_pretrained(local)
    copy_tokenizer(local, folder)


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

  def read(self, name, box):
    return np.array(np.asarray(self._t[name])[tuple(slice(a, b) for a, b in box)])
