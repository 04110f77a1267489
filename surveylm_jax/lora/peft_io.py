"""PEFT adapter folders <-> (lora_params, LoraConfig).

A PEFT LoRA folder holds `adapter_config.json` and `adapter_model.safetensors` (older ones
`adapter_model.bin`), with one pair of tensors per layer and module:

    base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight   [r, in_features]
    base_model.model.model.layers.{i}.self_attn.q_proj.lora_B.weight   [out_features, r]

Ours are stacked over layers and keep the kernel's axes: a [L, in..., r] = A.T reshaped,
b [L, r, out...] = B.T reshaped. transformers flattens (heads, head_dim) heads-major, which is a
row-major reshape of our axes, so the conversion is a transpose plus a reshape.

Only what the Flax decoder computes exactly is accepted; every other PEFT feature (DoRA,
modules_to_save, trained biases, per-module ranks, partial layers, other adapter types, ...) is a
`PeftAdapterError` that names it, never a partial load.
"""
from __future__ import annotations

import io
import json
import math
import os
import re
from typing import Any, Callable, Dict, List, Optional, Tuple

import jax.numpy as jnp
import ml_dtypes
import numpy as np

from surveylm_jax import paths
from surveylm_jax.lora.core import (TARGET_MODULES, LoraConfig, LoraError, factor_shapes,
                                    iter_modules, kernel_of)
from surveylm_jax.models.safetensors_io import SafetensorsError, SafetensorsFile, write_safetensors

CONFIG_FILE = "adapter_config.json"
SAFETENSORS_FILE = "adapter_model.safetensors"
BIN_FILE = "adapter_model.bin"
KEY_PREFIX = "base_model.model.model.layers"
# `peft` writes the prefix above; bare `model.layers...` keys appear in hand-made state dicts.
_KEY = re.compile(r"^(?:base_model\.model\.)?model\.layers\.(\d+)\.(.+)\.lora_([AB])\.weight$")
_BY_HF_NAME = {spec.hf_name: name for name, spec in TARGET_MODULES.items()}


class PeftAdapterError(LoraError):
  """A PEFT adapter folder that cannot be read or represented exactly."""


def _is_set(value) -> bool:
  return value not in (None, False, "none", [], {}, ())


# Fields of PEFT's LoraConfig that change the computation or the set of trained tensors in a way
# `x·W + scale·(x·a)·b` on the seven projections cannot express. Each entry: how to tell it is in
# use, and what to say.
_UNSUPPORTED: Dict[str, Tuple[Callable[[Any], bool], str]] = {
    "use_dora": (_is_set, "DoRA (weight-decomposed LoRA) adds a magnitude vector per module"),
    "modules_to_save": (_is_set, "modules_to_save trains full copies of extra modules"),
    "bias": (_is_set, "bias training ('all'/'lora_only') trains the base biases"),
    "lora_bias": (_is_set, "lora_bias adds a bias to lora_B"),
    "rank_pattern": (_is_set, "rank_pattern gives modules different ranks"),
    "alpha_pattern": (_is_set, "alpha_pattern gives modules different scales"),
    "layers_to_transform": (_is_set, "layers_to_transform adapts only some layers"),
    "layer_replication": (_is_set, "layer_replication duplicates base layers"),
    "target_parameters": (_is_set, "target_parameters adapts raw parameters (e.g. MoE experts)"),
    "trainable_token_indices": (_is_set, "trainable_token_indices trains embedding rows"),
    "fan_in_fan_out": (_is_set, "fan_in_fan_out is for Conv1D (GPT-2 style) weights"),
    "use_qalora": (_is_set, "QA-LoRA pools the adapter input"),
    "alora_invocation_tokens": (_is_set, "activated LoRA (aLoRA) applies only after a token"),
    "use_bdlora": (_is_set, "BD-LoRA uses block-diagonal factors"),
    "arrow_config": (_is_set, "Arrow routes between several adapters"),
    "kasa_config": (_is_set, "KaSA changes the LoRA forward"),
    "velora_config": (_is_set, "VeLoRA changes the LoRA forward"),
    "monteclora_config": (_is_set, "MonteCLoRA samples the LoRA factors"),
    "megatron_config": (_is_set, "Megatron parallel layers use another key layout"),
    "init_lora_weights": (
        lambda v: v in ("mica", "pissa", "olora", "corda", "loftq")
        or (isinstance(v, str) and v.startswith("pissa")),
        "this initialisation either is a LoRA variant (MiCA) or rewrites the base weights "
        "(PiSSA/OLoRA/CorDA/LoftQ; convert the adapter with PEFT's "
        "path_initial_model_for_weight_conversion first)"),
}


def _listing(folder: paths.epath.Path) -> str:
  return ", ".join(sorted(p.name for p in folder.iterdir()))


def _read_config(adapter_dir: paths.epath.Path) -> dict:
  if not adapter_dir.is_dir():
    raise PeftAdapterError(f"{adapter_dir}: adapter folder does not exist")
  path = adapter_dir / CONFIG_FILE
  if not path.exists():
    raise PeftAdapterError(f"{adapter_dir}: missing {CONFIG_FILE} (found: "
                           f"{_listing(adapter_dir) or 'nothing'})")
  try:
    config = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise PeftAdapterError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}")
  if not isinstance(config, dict):
    raise PeftAdapterError(f"{path}: expected a JSON object")
  peft_type = config.get("peft_type")
  if peft_type != "LORA":
    raise PeftAdapterError(f"{path}: peft_type {peft_type!r} is not supported; supported: 'LORA'")
  used = [f"{field}={config[field]!r} ({why})" for field, (in_use, why) in _UNSUPPORTED.items()
          if field in config and in_use(config[field])]
  if used:
    raise PeftAdapterError(f"{path}: unsupported PEFT feature(s): " + "; ".join(used))
  for field in ("r", "lora_alpha"):
    if not isinstance(config.get(field), (int, float)) or isinstance(config.get(field), bool):
      raise PeftAdapterError(f"{path}: field {field!r} must be a number, got "
                             f"{config.get(field)!r}")
  return config


def _read_tensors(adapter_dir: paths.epath.Path) -> Tuple[str, Dict[str, np.ndarray]]:
  st_path, bin_path = adapter_dir / SAFETENSORS_FILE, adapter_dir / BIN_FILE
  if st_path.exists():
    try:
      st = SafetensorsFile(st_path)
      return os.fspath(st_path), {name: st.get(name) for name in st.names()}
    except SafetensorsError as e:
      raise PeftAdapterError(str(e))
  if bin_path.exists():
    try:
      import torch  # noqa: PLC0415 -- only the legacy pickle format needs torch
    except ImportError:
      raise PeftAdapterError(f"{bin_path}: reading .bin adapters needs torch; install it or "
                             f"convert the adapter to {SAFETENSORS_FILE}")
    try:
      # From bytes, not a name: the adapter may sit on gs:// (adapters are small).
      state = torch.load(io.BytesIO(bin_path.read_bytes()), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- torch raises many types for a bad pickle
      raise PeftAdapterError(f"{bin_path}: cannot read ({type(e).__name__}: {e})")
    return os.fspath(bin_path), {k: v.detach().float().numpy() if v.dtype == torch.bfloat16
                      else v.detach().numpy() for k, v in state.items()}
  raise PeftAdapterError(f"{adapter_dir}: missing adapter weights: expected {SAFETENSORS_FILE} "
                         f"or {BIN_FILE} (found: {_listing(adapter_dir)})")


def _group_by_module(where: str, tensors: Dict[str, np.ndarray],
                     params) -> Dict[str, Dict[str, Dict[int, np.ndarray]]]:
  """{module name: {"A"|"B": {layer: array}}}, rejecting keys we cannot place."""
  grouped: Dict[str, Dict[str, Dict[int, np.ndarray]]] = {}
  unknown = []
  for key, value in tensors.items():
    match = _KEY.match(key)
    name = _BY_HF_NAME.get(match.group(2)) if match else None
    if name is None:
      unknown.append(key)
      continue
    grouped.setdefault(name, {"A": {}, "B": {}})[match.group(3)][int(match.group(1))] = value
  if unknown:
    raise PeftAdapterError(
        f"{where}: {len(unknown)} tensor(s) are not LoRA factors of a supported projection: "
        f"{', '.join(sorted(unknown)[:12])}{' ...' if len(unknown) > 12 else ''}; supported "
        f"modules: {', '.join(spec.hf_name for spec in TARGET_MODULES.values())}")
  if not grouped:
    raise PeftAdapterError(f"{where}: no LoRA tensors found")
  absent = [n for n in grouped if kernel_of(params, n) is None]
  if absent:
    raise PeftAdapterError(f"{where}: adapter targets {', '.join(absent)}, which the base model "
                           f"does not have")
  return grouped


def _check_declared_targets(adapter_dir: paths.epath.Path, declared, grouped) -> None:
  """Modules the config declares but the weights lack would otherwise load as a partial adapter.

  A list names modules by suffix, "all-linear" means every projection; a regex string cannot be
  resolved without the torch module tree and is left to the weights.
  """
  if declared == "all-linear":
    expected = set(TARGET_MODULES)
  elif isinstance(declared, (list, tuple)):
    expected = {str(t).split(".")[-1] for t in declared} & set(TARGET_MODULES)
  else:
    return
  lacking = sorted(expected - set(grouped), key=list(TARGET_MODULES).index)
  if lacking:
    raise PeftAdapterError(
        f"{adapter_dir / CONFIG_FILE}: target_modules includes "
        f"{', '.join(lacking)}, but the adapter weights hold no tensors for "
        f"{'it' if len(lacking) == 1 else 'them'} (found: {', '.join(grouped)})")


def load_peft(adapter_dir: paths.PathLike, params, *, dtype=jnp.float32,
              dropout: Optional[float] = None) -> Tuple[dict, LoraConfig]:
  """Reads a PEFT LoRA folder into `(lora_params, cfg)` for the base model whose params are given.

  Every layer of every adapted module must be present, every factor must have rank `r` and the
  base kernel's in/out sizes; all violations are listed in one error. `dropout` overrides the
  file's `lora_dropout` (it only matters for further training).
  """
  adapter_dir = paths.as_path(adapter_dir)   # local or gs://
  config = _read_config(adapter_dir)
  where, tensors = _read_tensors(adapter_dir)
  grouped = _group_by_module(where, tensors, params)
  _check_declared_targets(adapter_dir, config.get("target_modules"), grouped)
  rank = int(config["r"])
  problems: List[str] = []
  lora_params: dict = {}
  for name, spec in TARGET_MODULES.items():
    if name not in grouped:
      continue
    kernel_shape = tuple(kernel_of(params, name).shape)
    layers = kernel_shape[0]
    a_shape, b_shape = factor_shapes(kernel_shape, spec.in_axes, rank)
    in_flat, out_flat = math.prod(a_shape[1:-1]), math.prod(b_shape[2:])
    stacked = {}
    for side, want in (("A", (rank, in_flat)), ("B", (out_flat, rank))):
      by_layer = grouped[name][side]
      hf = f"{KEY_PREFIX}.{{i}}.{spec.hf_name}.lora_{side}.weight"
      missing = [i for i in range(layers) if i not in by_layer]
      extra = sorted(i for i in by_layer if not 0 <= i < layers)
      if missing:
        problems.append(f"{hf} missing for layer(s) {missing} (base has {layers} layers)")
      if extra:
        problems.append(f"{hf} present for layer(s) {extra}, base has only {layers} layers")
      bad = [f"{hf.format(i=i)} has shape {tuple(t.shape)}, expected {want}"
             for i, t in sorted(by_layer.items()) if tuple(t.shape) != want]
      problems.extend(bad)
      if missing or extra or bad:
        continue
      stacked[side] = np.stack([by_layer[i] for i in range(layers)])
    if len(stacked) == 2:
      _place(lora_params, spec.path, {
          # A [L, r, in] -> a [L, in..., r];  B [L, out, r] -> b [L, r, out...]
          "a": jnp.asarray(np.swapaxes(stacked["A"], 1, 2).reshape(a_shape), dtype),
          "b": jnp.asarray(np.swapaxes(stacked["B"], 1, 2).reshape(b_shape), dtype),
      })
  if problems:
    raise PeftAdapterError(f"{where}: adapter (r={rank}) does not fit the base model: "
                           + "; ".join(problems[:16])
                           + (f" ... ({len(problems)} problems)" if len(problems) > 16 else ""))
  cfg = LoraConfig(rank=rank, alpha=float(config["lora_alpha"]),
                   dropout=float(config.get("lora_dropout") or 0.0) if dropout is None else dropout,
                   targets=tuple(n for n in TARGET_MODULES if n in grouped),
                   use_rslora=bool(config.get("use_rslora", False)))
  return lora_params, cfg


def _place(tree: dict, path, value):
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def peft_tensors(lora_params, cfg: LoraConfig, dtype=None) -> Dict[str, np.ndarray]:
  """The PEFT state dict (name -> numpy array) of an adapter."""
  out = {}
  for name, spec, factors in iter_modules(lora_params):
    a = np.asarray(factors["a"])
    b = np.asarray(factors["b"])
    layers, rank = a.shape[0], a.shape[-1]
    if rank != cfg.rank or b.shape[1] != rank:
      raise LoraError(f"{spec.path_str}: factors have rank {rank}/{b.shape[1]}, "
                      f"config says {cfg.rank}")
    a_hf = np.swapaxes(a.reshape(layers, -1, rank), 1, 2)        # [L, r, in]
    b_hf = np.swapaxes(b.reshape(layers, rank, -1), 1, 2)        # [L, out, r]
    for i in range(layers):
      for side, value in (("A", a_hf[i]), ("B", b_hf[i])):
        value = np.ascontiguousarray(value if dtype is None else value.astype(dtype))
        out[f"{KEY_PREFIX}.{i}.{spec.hf_name}.lora_{side}.weight"] = value
  return out


_NP_DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}


def save_peft(adapter_dir: paths.PathLike, lora_params, cfg: LoraConfig, *,
              base_model_name_or_path: Optional[str] = None, dtype: Optional[str] = None) -> None:
  """Writes `adapter_config.json` + `adapter_model.safetensors` exactly as `peft` lays them out,
  so `peft.PeftModel.from_pretrained(base, adapter_dir)` (or vLLM) loads them unchanged.

  `dtype` ("float32", "bfloat16", "float16") converts the factors; default keeps theirs.
  """
  if dtype is not None and dtype not in _NP_DTYPES:
    raise LoraError(f"unsupported adapter dtype {dtype!r}; supported: {', '.join(_NP_DTYPES)}")
  tensors = peft_tensors(lora_params, cfg, None if dtype is None else _NP_DTYPES[dtype])
  modules = [name for name, _, _ in iter_modules(lora_params)]
  config = {
      "peft_type": "LORA",
      "task_type": "CAUSAL_LM",
      "base_model_name_or_path": base_model_name_or_path,
      "r": cfg.rank,
      "lora_alpha": cfg.alpha,
      "lora_dropout": cfg.dropout,
      "use_rslora": cfg.use_rslora,
      "target_modules": modules,
      "bias": "none",
      "use_dora": False,
      "fan_in_fan_out": False,
      "modules_to_save": None,
      "init_lora_weights": True,
      "layers_to_transform": None,
      "layers_pattern": None,
      "rank_pattern": {},
      "alpha_pattern": {},
      "inference_mode": True,
      "revision": None,
  }
  adapter_dir = paths.makedirs(adapter_dir)
  write_safetensors(adapter_dir / SAFETENSORS_FILE, sorted(tensors.items()))
  (adapter_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2))
