"""Stacking adapters across training stages, and exporting a merged model.

AlignSurvey trains Stage I (social foundation corpus) and Stage II (task data) as LoRA. Two ways
to start Stage II from a Stage I adapter, selected by name through `STAGE_STACKING`:

- "continue": the Stage I adapter is the initial `lora_params` of Stage II (what the reference
  does). Its rank, alpha, targets and rslora flag are the adapter's; a Stage II config that asks
  for different ones is an error rather than a silent override. Only the dropout is Stage II's.
- "merge_then_fresh": Stage I is merged into the base weights (W + scale·a·b) and Stage II
  trains a fresh adapter (B = 0) with the Stage II config on top of the merged base. Serving
  then needs the merged base (`save_merged`) plus the Stage II adapter.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple, Union

from surveylm_jax.lora.core import LoraConfig, LoraError, check_compatible, init, merge
from surveylm_jax.lora.peft_io import load_peft
from surveylm_jax.models.hf_io import save_pretrained
from surveylm_jax.models.transformer import Transformer
from surveylm_jax.paths import PathLike

# A Stage I adapter: a PEFT folder or an in-memory (lora_params, cfg) pair.
Adapter = Union[str, Tuple[dict, LoraConfig]]
StageStart = Tuple[dict, dict, LoraConfig]          # (base params, lora_params, cfg)


def _materialise(stage1: Adapter, params) -> Tuple[dict, LoraConfig]:
  if isinstance(stage1, str):
    return load_peft(stage1, params)
  lora_params, cfg = stage1
  check_compatible(params, lora_params, cfg)
  return lora_params, cfg


def continue_adapter(stage1: Adapter, params, cfg: LoraConfig, rng=None) -> StageStart:
  """Stage II keeps training the Stage I adapter: returns (params, stage1 lora_params, cfg)."""
  del rng  # nothing is initialised
  lora_params, stage1_cfg = _materialise(stage1, params)
  differing = [f"{field}: stage I {getattr(stage1_cfg, field)!r} vs stage II "
               f"{getattr(cfg, field)!r}" for field in ("rank", "alpha", "use_rslora")
               if getattr(stage1_cfg, field) != getattr(cfg, field)]
  if isinstance(cfg.targets, tuple) and set(cfg.targets) != set(stage1_cfg.targets):
    differing.append(f"targets: stage I {stage1_cfg.targets!r} vs stage II {cfg.targets!r}")
  if differing:
    raise LoraError("cannot continue the stage I adapter with a different LoRA config ("
                    + "; ".join(differing) + "); match the config or use 'merge_then_fresh'")
  return params, lora_params, stage1_cfg.replace(dropout=cfg.dropout)


def merge_then_fresh(stage1: Adapter, params, cfg: LoraConfig, rng=None) -> StageStart:
  """Stage I merged into the base, plus a fresh Stage II adapter from `cfg` (needs `rng`)."""
  if rng is None:
    raise LoraError("merge_then_fresh needs an rng to initialise the stage II adapter")
  lora_params, stage1_cfg = _materialise(stage1, params)
  merged = merge(params, lora_params, stage1_cfg)
  return merged, init(merged, cfg, rng), cfg


STAGE_STACKING: Dict[str, Callable[..., StageStart]] = {
    "continue": continue_adapter,
    "merge_then_fresh": merge_then_fresh,
}


def stack_stages(mode: str, stage1: Adapter, params, cfg: LoraConfig, rng=None) -> StageStart:
  """Starts Stage II from a Stage I adapter the way `mode` names (a key of `STAGE_STACKING`)."""
  if mode not in STAGE_STACKING:
    raise LoraError(f"unknown stage stacking mode {mode!r}; valid: {', '.join(STAGE_STACKING)}")
  return STAGE_STACKING[mode](stage1, params, cfg, rng)


def save_merged(path: PathLike, model: Transformer, params, lora_params, cfg: LoraConfig, *,
                dtype: Optional[str] = None, tokenizer_from: Optional[PathLike] = None) -> None:
  """Merges the adapter and writes an HF model folder: config, safetensors and tokenizer.

  `path` and `tokenizer_from` may be local or remote (epath). `tokenizer_from` is the base
  model's folder (or the tokenizer the adapter was trained with); the caller that loaded the
  base params knows it and must pass it, or the folder has weights but no tokenizer.
  """
  save_pretrained(path, model, merge(params, lora_params, cfg), dtype=dtype,
                  tokenizer_from=tokenizer_from)
