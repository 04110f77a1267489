"""The SurveyLM recipe from one config: Stage I -> Stage II (from the Stage I adapter) -> eval.

The config is a full experiment config whose `stage1` / `stage2` sections hold the fields that
differ per stage (nested like the config itself). Stage II always starts from Stage I's adapter
(`lora.stacking`: continue | merge_then_fresh). Evaluation runs when the Stage II config's
`eval.data` is set. Each stage writes WORKDIR/stageN/{metrics.jsonl, checkpoints/, adapter/}.
"""
import copy
import os

import ml_collections

from surveylm_jax import paths
from surveylm_jax.train import loop


def _under(folder, *parts: str) -> str:
  # Config fields hold strings; epath joins keep a `gs://` workdir a URI.
  return os.fspath(paths.join(folder, *parts))


def _apply(target: ml_collections.ConfigDict, changes: ml_collections.ConfigDict, where: str):
  for key, value in changes.items():
    # A stage's loss section may weight losses the base config does not name (checked against the
    # loss registry at start, like config.loss).
    if key not in target and where.rsplit(".", 1)[-1] != "loss":
      raise KeyError(f"{where}.{key}: not a config field; valid: {', '.join(sorted(target))}")
    if isinstance(value, ml_collections.ConfigDict) and isinstance(target.get(key),
                                                                   ml_collections.ConfigDict):
      _apply(target[key], value, f"{where}.{key}")
    else:
      target[key] = value


def stage_config(config, name: str) -> ml_collections.ConfigDict:
  """The base experiment config with the stage's section applied (stage sections removed)."""
  out = ml_collections.ConfigDict(copy.deepcopy(config.to_dict()))
  for stage in ("stage1", "stage2"):
    del out[stage]
  _apply(out, config[name], name)
  return out


def run(config, workdir: paths.PathLike) -> dict:
  stage1_dir, stage2_dir = _under(workdir, "stage1"), _under(workdir, "stage2")
  s1 = stage_config(config, "stage1")
  print(f"== Stage I: {s1.data.train}", flush=True)
  loop.train_and_evaluate(s1, stage1_dir)
  s2 = stage_config(config, "stage2")
  s2.lora.init_from = _under(stage1_dir, "adapter")
  print(f"== Stage II ({s2.lora.stacking} from {s2.lora.init_from}): {s2.data.train}", flush=True)
  metrics = loop.train_and_evaluate(s2, stage2_dir)
  if s2.eval.data:
    from surveylm_jax.eval import runner
    s2.eval.adapter = _under(stage2_dir, "adapter")
    if s2.lora.stacking == "merge_then_fresh":
      s2.model.path = _under(stage2_dir, "merged_base")
    print("== Evaluation", flush=True)
    metrics["eval"] = runner.evaluate(s2, stage2_dir)
  return metrics
