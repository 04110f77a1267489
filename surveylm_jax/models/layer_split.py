"""Run a model as two stacks of layers so that only the upper one is differentiated.

Training adapters on the top N layers only (`lora.train_top_layers`) needs no backward pass
through the layers below them: their output is a constant for the gradient. The scanned layer
stack cannot skip part of its backward pass, so the forward runs in two parts instead: layers
[0, split) under `stop_gradient`, handing their residual stream to layers [split, L), which end in
the final norm and the LM head. Both parts read slices of the same stacked parameter (and adapter)
trees, so nothing about the checkpoint or the adapter layout changes; the result equals the
single-stack forward (tests/models/test_models_layer_split.py).
"""
from __future__ import annotations

import jax

from surveylm_jax.models.config import ModelConfig
from surveylm_jax.models.transformer import Transformer

LAYERS = "layers"


def layer_range_config(cfg: ModelConfig, start: int, stop: int) -> ModelConfig:
  """The architecture of layers [start, stop) of `cfg` (per-layer settings sliced alike)."""
  if not 0 <= start < stop <= cfg.num_hidden_layers:
    raise ValueError(f"layer range [{start}, {stop}) is outside the model's "
                     f"{cfg.num_hidden_layers} layers")
  windows = cfg.sliding_windows[start:stop] if cfg.sliding_windows else ()
  return cfg.replace(num_hidden_layers=stop - start, sliding_windows=windows)


def slice_layers(variables: dict, start: int, stop: int) -> dict:
  """`variables` (any collections: params, lora) with every stacked layer array cut to
  [start, stop) along its leading layer axis; everything outside the layer stack is kept."""
  out = {}
  for collection, tree in variables.items():
    if LAYERS not in tree:
      raise KeyError(f"collection {collection!r} has no {LAYERS!r} subtree; "
                     f"has: {', '.join(sorted(tree))}")
    tree = dict(tree)
    tree[LAYERS] = jax.tree_util.tree_map(lambda x: x[start:stop], tree[LAYERS])
    out[collection] = tree
  return out


def check_split(cfg: ModelConfig, split: int) -> None:
  if not 0 < split < cfg.num_hidden_layers:
    raise ValueError(f"a layer split must leave layers on both sides: got {split} for a "
                     f"{cfg.num_hidden_layers}-layer model (valid: 1..{cfg.num_hidden_layers - 1})")


def _halves(model: Transformer, split: int):
  cfg = model.config
  check_split(cfg, split)
  lower = model.clone(config=layer_range_config(cfg, 0, split))
  upper = model.clone(config=layer_range_config(cfg, split, cfg.num_hidden_layers))
  return lower, upper


def apply_lower(model: Transformer, variables: dict, input_ids, *, split: int, rngs=None,
                **kwargs):
  """The residual stream after layers [0, split) ([B, T, E]), the input `apply_upper` takes."""
  lower, _ = _halves(model, split)
  return lower.apply(slice_layers(variables, 0, split), input_ids, rngs=rngs or {},
                     return_residual=True, **kwargs)


def apply_upper(model: Transformer, variables: dict, input_ids, residual, *, split: int,
                rngs=None, **kwargs):
  """Layers [split, L), the final norm and the head on a residual stream from `apply_lower`."""
  _, upper = _halves(model, split)
  return upper.apply(slice_layers(variables, split, model.config.num_hidden_layers), input_ids,
                     rngs=rngs or {}, residual_in=residual, **kwargs)


def apply_split(model: Transformer, variables: dict, input_ids, *, split: int, rngs=None,
                **kwargs):
  """`model.apply(variables, input_ids, **kwargs)` with no gradient through layers below `split`.

  Returns what the full model returns (logits, or hidden states with `return_hidden`)."""
  check_split(model.config, split)
  lower_rngs, upper_rngs = {}, {}
  for name, key in (rngs or {}).items():
    lower_rngs[name], upper_rngs[name] = jax.random.split(key)
  residual = apply_lower(model, variables, input_ids, split=split, rngs=lower_rngs, **kwargs)
  return apply_upper(model, variables, input_ids, jax.lax.stop_gradient(residual), split=split,
                     rngs=upper_rngs, **kwargs)
