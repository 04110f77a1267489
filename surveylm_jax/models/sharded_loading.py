"""Checkpoint tensors straight into sharded `jax.Array`s, each process reading only its slices.

For every param, each device this process addresses gets exactly its slice: the reader takes
the slice's index, reads just that slice of the source tensor(s) (for a stacked layer param,
that slice of each layer's tensor), reshapes it to our layout and casts it to the param dtype.
No process reads the whole checkpoint on a multi-host mesh, and host memory holds one device
slice plus about one source tensor at a time, never the whole model.

The shards are put on their devices one at a time and then assembled
(`make_array_from_single_device_arrays`), which is what `jax.make_array_from_callback` does
internally, except that it first collects every local shard of the param as host numpy: for a
layer-stacked param that is all layers of this process's part at once (e.g. 3.8 GB for
Qwen2.5-7B's stacked MLP on one 8-device host), on top of the device copies.
"""
from __future__ import annotations

from typing import Any, Dict

import jax
import ml_dtypes
import numpy as np

from surveylm_jax import sharding
from surveylm_jax.models import hf_layout
from surveylm_jax.models.config import ModelConfig
from surveylm_jax.models.hf_layout import TensorLayout
from surveylm_jax.models.safetensors_io import box_of
from surveylm_jax.models.transformer import logical_axes

NP_DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}


def tree_get(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def tree_set(tree: dict, path, value):
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _shard_reader(tensors, spec: TensorLayout, cfg: ModelConfig, stacked: bool, shape,
                  dtype):
  """Slice index (a tuple of slices, as jax gives it) -> numpy array of that slice in `dtype`."""
  def read(index) -> np.ndarray:
    box = box_of(index, shape)
    if stacked:
      (first, stop), inner = box[0], box[1:]
      out = np.empty(tuple(b - a for a, b in box), dtype)
      hf_box, _ = spec.source_box(cfg, inner)
      for i in range(first, stop):
        source = tensors.read(spec.hf_name.format(i=i), hf_box)
        out[i - first] = spec.read_box(source, cfg, inner)   # the cast happens on assignment
        del source
      return out
    hf_box, _ = spec.source_box(cfg, box)
    return np.ascontiguousarray(spec.read_box(tensors.read(spec.hf_name, hf_box), cfg, box),
                                dtype=dtype)
  return read


def make_sharded_array(shape, sharding: jax.sharding.Sharding, read) -> jax.Array:
  """A global array whose local shards come from `read(index)`, one device at a time."""
  placed: Dict[Any, jax.Array] = {}   # devices that replicate a slice: read it once
  shards = []
  for device, index in sharding.addressable_devices_indices_map(tuple(shape)).items():
    box = box_of(index, shape)
    if box in placed:
      shards.append(jax.device_put(placed[box], device))
    else:
      host = read(index)
      # device_put is asynchronous and keeps `host` alive until the copy is done: waiting for
      # it bounds host memory to one slice, where a busy machine would otherwise pile up reads.
      shards.append(placed.setdefault(box, jax.device_put(host, device).block_until_ready()))
      del host   # only the device copy stays (on accelerators, host memory is freed here)
  return jax.make_array_from_single_device_arrays(tuple(shape), sharding, shards)


def load_params(tensors, cfg: ModelConfig, shardings=None, *, where: str = "checkpoint") -> dict:
  """The params pytree of `cfg.param_dtype` jax.Arrays read from `tensors`.

  `tensors` offers `names()`, `shape(name)` and `read(name, box)` (a `CheckpointTensors`).
  `shardings` is a pytree of `jax.sharding.Sharding` shaped like the params (see
  `sharding.logical_to_sharding(models.logical_axes(model), mesh, rules)`); without it every
  param lands whole on this process's first device. Names and shapes are checked first, so a
  wrong checkpoint fails before anything is read.
  """
  hf_layout.check_tensors(tensors, cfg, where)
  dtype = NP_DTYPES[cfg.param_dtype]
  default = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  params: dict = {}
  for spec in hf_layout.TOP_TENSORS:
    if spec.when(cfg):
      shape = spec.our_shape(cfg)
      sharding = tree_get(shardings, spec.path) if shardings is not None else default
      tree_set(params, spec.path, make_sharded_array(
          shape, sharding, _shard_reader(tensors, spec, cfg, False, shape, dtype)))
  layers: dict = {}
  for spec in hf_layout.LAYER_TENSORS:
    if spec.when(cfg):
      shape = (cfg.num_hidden_layers,) + spec.our_shape(cfg)
      sharding = tree_get(shardings["layers"], spec.path) if shardings is not None else default
      tree_set(layers, spec.path, make_sharded_array(
          shape, sharding, _shard_reader(tensors, spec, cfg, True, shape, dtype)))
  params["layers"] = layers
  return params


def param_shardings(model, mesh, rules):
  """NamedShardings of every param of `model` under the logical-axis `rules` on `mesh`."""
  return sharding.logical_to_sharding(logical_axes(model), mesh, rules)
