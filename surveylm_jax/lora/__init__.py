"""LoRA as a pure transform of the param tree, with exact PEFT import/export.

    from surveylm_jax import lora, models
    model, params = models.load_pretrained("checkpoints/smollm2-135m-instruct")
    cfg = lora.LoraConfig(rank=8, alpha=16, dropout=0.05)        # q/k/v/o/gate/up/down
    lora_params = lora.init(params, cfg, jax.random.PRNGKey(0))   # a ~ PEFT's init, b = 0
    logits = lora.apply(model, params, lora_params, cfg, ids, attention_mask=mask)
    merged = lora.merge(params, lora_params, cfg)                 # W + scale·a·b, same layout

Training differentiates `lora_params` only (the optimizer is built on them alone); the forward
computes x·W + scale·(x·a)·b, so frozen kernels never get a weight gradient.

PEFT interop: `lora.load_peft(dir, params) -> (lora_params, cfg)` reads a `peft`-written folder
(AlignSurvey's adapters, LLaMA-Factory outputs); `lora.save_peft(dir, lora_params, cfg,
base_model_name_or_path=...)` writes one `peft.PeftModel.from_pretrained` and vLLM load as is;
`lora.save_merged(path, model, params, lora_params, cfg)` writes a merged HF model folder.

Two-stage training (select with a config string, `lora.stack_stages(mode, ...)`):
  "continue"          Stage II starts from the Stage I adapter:
                        params, lora_params, cfg = lora.continue_adapter(stage1_dir, params, cfg)
  "merge_then_fresh"  Stage I is merged into the base and Stage II trains a fresh adapter:
                        params, lora_params, cfg = lora.merge_then_fresh(stage1_dir, params, cfg, rng)
`stage1` is a PEFT folder or an in-memory `(lora_params, cfg)` pair.
"""
from surveylm_jax.lora.core import (ALL_PROJECTIONS, TARGET_MODULES, LoraConfig, LoraError,
                                    TargetModule, adapted_modules, apply, available_targets,
                                    check_compatible, delta, init, logical_axes, lora_model, merge,
                                    num_params, resolve_targets)
from surveylm_jax.lora.peft_io import PeftAdapterError, load_peft, peft_tensors, save_peft
from surveylm_jax.lora.stages import (STAGE_STACKING, continue_adapter, merge_then_fresh,
                                      save_merged, stack_stages)

__all__ = [
    "ALL_PROJECTIONS", "TARGET_MODULES", "LoraConfig", "LoraError", "TargetModule",
    "adapted_modules", "apply", "available_targets", "check_compatible", "delta", "init",
    "logical_axes", "lora_model", "merge", "num_params", "resolve_targets", "PeftAdapterError",
    "load_peft", "peft_tensors", "save_peft", "STAGE_STACKING", "continue_adapter",
    "merge_then_fresh", "save_merged", "stack_stages",
]
