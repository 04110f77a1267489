"""LoRA as pure functions of the param tree: config, target registry, init, merge, apply.

The base params are never modified or differentiated during LoRA training. The adapter lives in
its own pytree, `lora_params`, whose paths mirror the params of the projections it adapts:

    {"layers": {"self_attn": {"q_proj": {"a": [L, embed, r], "b": [L, r, heads, head_dim]}, ...},
                "mlp": {"down_proj": {"a": [L, mlp, r], "b": [L, r, embed]}, ...}}}

`a` has the kernel's input axes followed by the rank, `b` the rank followed by the kernel's
output axes, and both keep the leading layer axis `L` of the scanned stack. The model reads them
from its `lora` variable collection and adds `scale * ((x @ a) @ b)` to each projection, so a
training step differentiates only `lora_params` and never forms a full weight gradient.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Mapping
from typing import Dict, Iterator, List, Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from surveylm_jax.models.transformer import Transformer, logical_axes as model_logical_axes


class LoraError(ValueError):
  """A LoRA config, adapter tree or adapter file that does not fit the base model."""


@dataclasses.dataclass(frozen=True)
class TargetModule:
  """One projection LoRA can adapt.

  `path` locates the module in the params tree, `in_axes` says how many kernel axes (after the
  layer axis) are inputs — it must equal the `in_axes` the model's `Projection` uses — and
  `hf_name` is the module's name under `model.layers.N` in transformers, which PEFT keys use.
  """
  path: Tuple[str, ...]
  in_axes: int
  hf_name: str

  @property
  def path_str(self) -> str:
    return "/".join(self.path)


# Every projection the decoder routes through `Projection`, i.e. every module that reads the
# `lora` collection. Embeddings, norms and the LM head cannot take an adapter.
TARGET_MODULES: Dict[str, TargetModule] = {
    "q_proj": TargetModule(("layers", "self_attn", "q_proj"), 1, "self_attn.q_proj"),
    "k_proj": TargetModule(("layers", "self_attn", "k_proj"), 1, "self_attn.k_proj"),
    "v_proj": TargetModule(("layers", "self_attn", "v_proj"), 1, "self_attn.v_proj"),
    "o_proj": TargetModule(("layers", "self_attn", "o_proj"), 2, "self_attn.o_proj"),
    "gate_proj": TargetModule(("layers", "mlp", "gate_proj"), 1, "mlp.gate_proj"),
    "up_proj": TargetModule(("layers", "mlp", "up_proj"), 1, "mlp.up_proj"),
    "down_proj": TargetModule(("layers", "mlp", "down_proj"), 1, "mlp.down_proj"),
}
ALL_PROJECTIONS: Tuple[str, ...] = tuple(TARGET_MODULES)


@dataclasses.dataclass(frozen=True)
class LoraConfig:
  """Hyper-parameters of one adapter.

  `targets` is either a sequence of module names (keys of `TARGET_MODULES`) or one regular
  expression, searched (`re.search`) in each module's param path such as
  `layers/self_attn/q_proj`. The config is hashable, so it can be a static jit argument.
  """
  rank: int = 8
  alpha: float = 16.0
  dropout: float = 0.0
  targets: Union[Tuple[str, ...], str] = ALL_PROJECTIONS
  use_rslora: bool = False

  def __post_init__(self):
    if isinstance(self.targets, (list, tuple)):
      object.__setattr__(self, "targets", tuple(self.targets))
    elif isinstance(self.targets, str):
      try:
        re.compile(self.targets)
      except re.error as e:
        raise LoraError(f"LoraConfig.targets {self.targets!r} is not a valid regex: {e}")
    else:
      raise LoraError(f"LoraConfig.targets must be module names or a regex string, "
                      f"got {type(self.targets).__name__}")
    if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank <= 0:
      raise LoraError(f"LoraConfig.rank must be a positive int, got {self.rank!r}")
    if not self.alpha > 0:
      raise LoraError(f"LoraConfig.alpha must be positive, got {self.alpha!r}")
    if not 0.0 <= self.dropout < 1.0:
      raise LoraError(f"LoraConfig.dropout must be in [0, 1), got {self.dropout!r}")

  @property
  def scale(self) -> float:
    """The factor on `(x @ a) @ b`: alpha / r, or alpha / sqrt(r) with rank-stabilised LoRA."""
    return self.alpha / (math.sqrt(self.rank) if self.use_rslora else self.rank)

  def replace(self, **kwargs) -> "LoraConfig":
    return dataclasses.replace(self, **kwargs)


# ---------------------------------------------------------------------------------------------
# Tree helpers

def _get(tree, path):
  for key in path:
    if not isinstance(tree, Mapping) or key not in tree:
      return None
    tree = tree[key]
  return tree


def _set(tree: dict, path, value):
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _with_replaced(tree: dict, path, value) -> dict:
  """A copy of `tree` with `path` set to `value`; untouched subtrees are shared, not copied."""
  if not path:
    return value
  out = dict(tree)
  out[path[0]] = _with_replaced(tree[path[0]], path[1:], value)
  return out


def _kernel(params, spec: TargetModule):
  module = _get(nn.meta.unbox(params), spec.path)
  return None if module is None else module.get("kernel")


def available_targets(params) -> List[str]:
  """Names of the registered projections present in `params`."""
  return [name for name, spec in TARGET_MODULES.items() if _kernel(params, spec) is not None]


def _describe_available(params) -> str:
  return ", ".join(f"{n} ({TARGET_MODULES[n].path_str})" for n in available_targets(params))


def resolve_targets(params, cfg: LoraConfig) -> List[str]:
  """The module names `cfg.targets` selects in `params`, in registry order.

  A name that is not a projection of this model, or a regex that matches none, is an error that
  lists the available modules.
  """
  available = available_targets(params)
  if isinstance(cfg.targets, str):
    pattern = re.compile(cfg.targets)
    chosen = [n for n in available if pattern.search(TARGET_MODULES[n].path_str)]
    if not chosen:
      raise LoraError(f"LoRA target regex {cfg.targets!r} matches no module; available: "
                      f"{_describe_available(params)}")
    return chosen
  unknown = [t for t in cfg.targets if t not in available]
  if unknown:
    raise LoraError(f"unknown LoRA target module(s) {', '.join(map(repr, unknown))}; "
                    f"available: {_describe_available(params)}")
  if not cfg.targets:
    raise LoraError(f"LoraConfig.targets is empty; available: {_describe_available(params)}")
  return [n for n in available if n in cfg.targets]


def adapted_modules(lora_params) -> List[str]:
  """Names of the modules an adapter tree holds; any other leaf is an error naming its path."""
  names = [n for n, spec in TARGET_MODULES.items() if _get(lora_params, spec.path) is not None]
  known = {TARGET_MODULES[n].path + (leaf,) for n in names for leaf in ("a", "b")}
  paths = {tuple(getattr(k, "key", str(k)) for k in path)
           for path, _ in jax.tree_util.tree_flatten_with_path(lora_params)[0]}
  unexpected = sorted("/".join(p) for p in paths if p not in known)
  if unexpected:
    raise LoraError(f"adapter tree has leaves that are not LoRA factors of a known projection: "
                    f"{', '.join(unexpected[:12])}; each module needs exactly 'a' and 'b' under "
                    f"one of: {', '.join(s.path_str for s in TARGET_MODULES.values())}")
  missing = [f"{TARGET_MODULES[n].path_str}/{leaf}" for n in names for leaf in ("a", "b")
             if TARGET_MODULES[n].path + (leaf,) not in paths]
  if missing:
    raise LoraError(f"adapter tree lacks factor(s): {', '.join(missing)}")
  if not names:
    raise LoraError("adapter tree is empty: no LoRA factors found")
  return names


def factor_shapes(kernel_shape: Sequence[int], in_axes: int,
                  rank: int) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
  """Shapes of `a` and `b` for a stacked kernel [L, in..., out...]."""
  layers, ins, outs = kernel_shape[0], kernel_shape[1:1 + in_axes], kernel_shape[1 + in_axes:]
  return (layers, *ins, rank), (layers, rank, *outs)


def check_compatible(params, lora_params, cfg: LoraConfig) -> List[str]:
  """Checks every factor's shape against its base kernel and `cfg.rank`; returns module names.

  All mismatches are reported together, each naming the module. Shapes are static, so this
  also runs under `jit`.
  """
  names = adapted_modules(lora_params)
  problems = []
  for name in names:
    spec = TARGET_MODULES[name]
    kernel = _kernel(params, spec)
    if kernel is None:
      problems.append(f"{name}: base model has no {spec.path_str}")
      continue
    factors = _get(lora_params, spec.path)
    want_a, want_b = factor_shapes(kernel.shape, spec.in_axes, cfg.rank)
    for leaf, want in (("a", want_a), ("b", want_b)):
      got = tuple(factors[leaf].shape)
      if got != want:
        problems.append(f"{spec.path_str}/{leaf} has shape {got}, expected {want} "
                        f"(kernel {tuple(kernel.shape)}, rank {cfg.rank})")
  if problems:
    raise LoraError("adapter does not fit the base model: " + "; ".join(problems))
  return names


# ---------------------------------------------------------------------------------------------
# The transform

def init(params, cfg: LoraConfig, rng, dtype=jnp.float32) -> dict:
  """A fresh adapter for the modules `cfg.targets` selects.

  As in PEFT, `a` is Kaiming-uniform with a=sqrt(5), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
  and `b` is zero, so the adapted model starts exactly at the base model. `params` may be
  abstract (`jax.ShapeDtypeStruct` leaves); only shapes are read.
  """
  layout = tuple(
      (name,) + factor_shapes(_kernel(params, TARGET_MODULES[name]).shape,
                              TARGET_MODULES[name].in_axes, cfg.rank)
      for name in resolve_targets(params, cfg))
  factors = _random_factors(rng, layout, jnp.dtype(dtype))
  lora_params: dict = {}
  for name, _, _ in layout:
    _set(lora_params, TARGET_MODULES[name].path, factors[name])
  return lora_params


@functools.partial(jax.jit, static_argnums=(1, 2))
def _random_factors(rng, layout, dtype):
  """{name: {"a": uniform, "b": zeros}} for (name, a_shape, b_shape) entries.

  All `a` come from one uniform draw, cut in registry order: each random op costs seconds of
  XLA compile time on CPU, so one draw instead of one per module keeps `init` cheap.
  """
  sizes = [math.prod(a_shape) for _, a_shape, _ in layout]
  unit = jax.random.uniform(rng, (sum(sizes),), jnp.float32, -1.0, 1.0)
  out, offset = {}, 0
  for (name, a_shape, b_shape), size in zip(layout, sizes):
    bound = 1.0 / math.sqrt(math.prod(a_shape[1:-1]))          # fan_in = prod(input axes)
    a = (bound * unit[offset:offset + size]).reshape(a_shape)
    out[name] = {"a": a.astype(dtype), "b": jnp.zeros(b_shape, dtype)}
    offset += size
  return out


def delta(a, b, in_axes: int):
  """The full-weight update a·b of one stacked module, in the kernel layout [L, in..., out...]."""
  layers, rank = a.shape[0], a.shape[-1]
  ins, outs = a.shape[1:1 + in_axes], b.shape[2:]
  flat = jnp.matmul(a.reshape(layers, -1, rank).astype(jnp.float32),
                    b.reshape(layers, rank, -1).astype(jnp.float32))
  return flat.reshape(layers, *ins, *outs)


def merge(params, lora_params, cfg: LoraConfig):
  """The params with every adapted kernel replaced by W + scale·a·b (same layout and dtype).

  Pure and jittable (`jax.jit(merge, static_argnums=2)`); the input trees are not modified.
  The sum is formed in float32 and cast back to the kernel's dtype.
  """
  merged = params
  for name in check_compatible(params, lora_params, cfg):
    spec = TARGET_MODULES[name]
    kernel = _kernel(params, spec)
    factors = _get(lora_params, spec.path)
    update = cfg.scale * delta(factors["a"], factors["b"], spec.in_axes)
    merged = _with_replaced(merged, spec.path + ("kernel",),
                            (kernel.astype(jnp.float32) + update).astype(kernel.dtype))
  return merged


def lora_model(model: Transformer, cfg: LoraConfig) -> Transformer:
  """The same module with this adapter's scale and dropout set on every projection."""
  return model.clone(lora_scale=cfg.scale, lora_dropout=cfg.dropout)


def apply(model: Transformer, params, lora_params, cfg: LoraConfig, *args, **kwargs):
  """Forward with the adapter unmerged: each projection computes x·W + scale·(x·a)·b.

  Extra arguments go to `model.apply`; training passes `deterministic=False` and
  `rngs={"dropout": key}` to enable LoRA dropout. Differentiate with respect to `lora_params`
  only: the frozen kernels then get no weight gradient at all.
  """
  check_compatible(params, lora_params, cfg)
  return lora_model(model, cfg).apply({"params": params, "lora": lora_params}, *args, **kwargs)


def num_params(lora_params) -> int:
  """Trainable parameter count of an adapter."""
  return sum(int(math.prod(x.shape)) for x in jax.tree_util.tree_leaves(lora_params))


def logical_axes(model: Transformer, lora_params) -> dict:
  """PartitionSpecs of logical axis names for the adapter, derived from its kernels' names.

  `a` keeps the kernel's layer and input axes, `b` its layer and output axes; the rank axis is
  small and left unsharded (None).
  """
  kernel_axes = model_logical_axes(model)
  out: dict = {}
  for name in adapted_modules(lora_params):
    spec = TARGET_MODULES[name]
    axes = tuple(_get(kernel_axes, spec.path + ("kernel",)))
    layer, ins, outs = axes[:1], axes[1:1 + spec.in_axes], axes[1 + spec.in_axes:]
    _set(out, spec.path, {"a": PartitionSpec(*layer, *ins, None),
                          "b": PartitionSpec(*layer, None, *outs)})
  return out


def iter_modules(lora_params) -> Iterator[Tuple[str, TargetModule, dict]]:
  """(name, registry entry, {"a", "b"}) for each adapted module, in registry order."""
  for name in adapted_modules(lora_params):
    spec = TARGET_MODULES[name]
    yield name, spec, _get(lora_params, spec.path)


def kernel_of(params, name: str):
  """The base kernel of registered module `name` (None when the model lacks it)."""
  return _kernel(params, TARGET_MODULES[name])
