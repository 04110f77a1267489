"""No forgetting: the base model and the fine-tuned one on items of another survey programme.

Fine-tuning on one survey should not destroy what the base model knew about others. A config
names the other survey's converted files in a `forgetting` section,

    config.forgetting = ml_collections.ConfigDict({
        "data": "data/wvs1995/task4/individual/test.json,data/ces2011/task4/individual/test.json",
        "train_data": "...train.json files of the same surveys (the baselines' fit)",
        "max_respondents": 150})

and `run` evaluates the zero-shot model and the two-stage adapter on exactly those records (same
sampled respondents, same read-out, no calibration), beside the uniform and marginal baselines
of that survey. None of these files may be a training file of either stage: checked here, because
a leak would make "no forgetting" trivially true.
"""
from __future__ import annotations

import copy
import os

from surveylm_jax import paths
from surveylm_jax.cli import ConfigError
from surveylm_jax.eval import comparison, report, runner

METRICS = ("accuracy", "macro_f1", "nll", "w1_normalized")


def _files(spec: str) -> list[str]:
  return [p.strip() for p in str(spec or "").split(",") if p.strip()]


def _check_unseen(stage_configs: dict, spec) -> None:
  trained = {os.path.normpath(p): name for name, c in stage_configs.items()
             for p in _files(c.data.train)}
  for path in _files(spec.data):
    if os.path.normpath(path) in trained:
      raise ConfigError(f"forgetting.data: {path} is the {trained[os.path.normpath(path)]} training "
                        "file; the no-forgetting check needs items no stage trained on")


def eval_config(stage2_config, spec, adapter: str):
  """The Stage II config evaluating `adapter` ('' = the base model) on the other survey."""
  c = copy.deepcopy(stage2_config)
  c.eval.data = spec.data
  c.eval.train_data = spec.train_data
  c.eval.baselines = tuple(spec.get("baselines", ("uniform", "marginal")))
  c.eval.max_respondents = int(spec.get("max_respondents", -1))
  c.eval.adapter = adapter
  c.eval.group_prompts = False
  c.eval.position_bias_records = 0
  c.eval.subgroups = ("auto",)           # the other survey's own profile fields
  c.eval.subgroup_columns = ("auto",)
  if "calibration_data" in c.eval:
    c.eval.calibration_data = ""          # raw read-outs: calibration is the main run's business
  return c


def run(stage_configs: dict, spec, zero_dir: str, two_dir: str) -> dict:
  """{'zero_shot', 'two_stage', 'baselines', 'data', 'no_worse'} on the other survey's items.

  `stage_configs` maps 'stage1'/'stage2' to their stage configs (two_stage.stage_config); the
  two-stage adapter is read from two_dir/stage2/adapter. Finished evaluations are reused."""
  _check_unseen(stage_configs, spec)
  s2 = stage_configs["stage2"]
  results = {}
  for name, folder, adapter in (("zero_shot", paths.join(zero_dir, "forgetting"), ""),
                                ("two_stage", paths.join(two_dir, "forgetting"),
                                 os.fspath(paths.join(two_dir, "stage2", "adapter")))):
    metrics = report.finished_metrics(folder)
    if metrics is None:
      print(f"== No-forgetting check: {name} on {spec.data}", flush=True)
      metrics = runner.evaluate(eval_config(s2, spec, adapter), os.fspath(folder))
    results[name] = metrics
  summary = comparison.build_summary(results["zero_shot"], results["two_stage"],
                                     tuple(spec.get("baselines", ("uniform", "marginal"))))
  out = {"zero_shot": summary["zero_shot"], "two_stage": summary["two_stage"],
         "baselines": summary["baselines"], "data": {"files": _files(spec.data),
                                                     "counts": summary["data"]["counts"]}}
  # "No worse" on each headline number (None where a number is missing).
  out["no_worse"] = {m: comparison.no_worse(out["two_stage"].get(m), out["zero_shot"].get(m), m)
                     for m in METRICS}
  return out
