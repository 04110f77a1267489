"""`make demo`: zero-shot -> Stage I -> Stage II -> evaluation on real GSS data, one table.

    python -m launch.demo --config=configs/demo.py --workdir=runs/demo

Writes WORKDIR/zero_shot/eval/ (the base model's evaluation), WORKDIR/two_stage/{stage1,stage2}/
(training runs, adapters, the two-stage model's evaluation), and WORKDIR/{summary.json,
report.md, plots/} comparing zero-shot, two-stage and the baselines. A finished workdir is
reused stage by stage (delete it to start over).
"""
import copy
import os
import time

from absl import flags, logging
from ml_collections import config_flags

from surveylm_jax import cli, compile_cache, extensions, paths
from surveylm_jax.train import two_stage

_CONFIG = config_flags.DEFINE_config_file("config", "configs/demo.py", "Demo config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "Output folder.")

DATA_COMMANDS = {
    "data/gss2018": "python -m tools.survey_to_alignsurvey --codebook configs/surveys/gss2018_spending.yaml "
                    "--out data/gss2018",
    "data/gss_abortion_2018": "python -m tools.survey_to_alignsurvey --codebook "
                              "configs/surveys/gss_abortion.yaml --out data/gss_abortion_2018 --keep year=2018",
    # The generalization configs' data (Makefile: the exact conversion commands).
    **{folder: "make data-generalization" for folder in (
        "data/gss2018_unseen", "data/gss_abortion_waves", "data/gss2018_context", "data/wvs1995",
        "data/ces2011")},
}


def _check_inputs(config):
  inputs = [config.model.path, config.stage1.data.train, config.stage2.data.train,
            config.eval.train_data] + config.eval.data.split(",")
  inputs += config.eval.get("calibration_data", "").split(",")
  if config.get("forgetting"):
    inputs += config.forgetting.data.split(",") + config.forgetting.train_data.split(",")
  missing = [p for p in inputs if p and not paths.as_path(p).exists()]
  if missing:
    hints = sorted({cmd for folder, cmd in DATA_COMMANDS.items() for p in missing if p.startswith(folder + "/")})
    raise FileNotFoundError(f"missing inputs: {missing}" + ("; make them with:\n  " + "\n  ".join(hints)
                                                           if hints else "; run `make demo`"))


class Clock:
  def __init__(self):
    self.start = time.time()
    self.marks = []

  def stage(self, name: str):
    self.marks.append((name, time.time()))
    print(f"\n=== [{self.elapsed()}] {name}", flush=True)

  def elapsed(self) -> str:
    s = int(time.time() - self.start)
    return f"{s // 60:02d}:{s % 60:02d}"

  def durations(self) -> list[str]:
    ends = [t for _, t in self.marks[1:]] + [time.time()]
    return [f"{name}: {end - t:.0f} s" for (name, t), end in zip(self.marks, ends)]


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  compile_cache.enable(_CONFIG.value.compile_cache.dir,   # before the first compile
                       min_compile_secs=_CONFIG.value.compile_cache.min_compile_secs)
  extensions.load(_CONFIG.value)   # config.extra_modules, then registry names checked
  from surveylm_jax.eval import comparison, forgetting, report, runner
  config, workdir = _CONFIG.value, _WORKDIR.value
  paths.check_writable(workdir, "workdir")   # before the first of three long stages
  _check_inputs(config)
  clock = Clock()

  clock.stage("1/3 zero-shot evaluation of the base model")
  zero_dir = os.fspath(paths.join(workdir, "zero_shot"))
  zero_shot = report.finished_metrics(zero_dir)
  if zero_shot is None:
    zero_config = two_stage.stage_config(config, "stage2")
    zero_config.eval.adapter = ""
    zero_shot = runner.evaluate(zero_config, zero_dir)
  else:
    print(f"reusing {zero_dir}/eval", flush=True)

  clock.stage("2/3 Stage I + Stage II LoRA fine-tuning, then evaluation")
  two_dir = os.fspath(paths.join(workdir, "two_stage"))
  tuned = report.finished_metrics(paths.join(two_dir, "stage2"))
  if tuned is None:
    tuned = two_stage.run(copy.deepcopy(config), two_dir)["eval"]
  else:
    print(f"reusing {two_dir}/stage2/eval", flush=True)

  other_survey = None
  if config.get("forgetting") and config.forgetting.data:
    clock.stage("no forgetting: both models on another survey's items")
    stages = {name: two_stage.stage_config(config, name) for name in ("stage1", "stage2")}
    other_survey = forgetting.run(stages, config.forgetting, zero_dir, two_dir)

  clock.stage("3/3 comparison")
  summary = comparison.build_summary(zero_shot, tuned, tuple(config.eval.baselines))
  if other_survey is not None:
    summary["forgetting"] = other_survey
  curves = {}
  for stage, title in (("stage1", "Stage I (GSS abortion items)"), ("stage2", "Stage II (GSS 2018 task 4)")):
    path = paths.join(two_dir, stage, "metrics.jsonl")
    if path.exists():
      curves[title] = comparison.read_curve(path)
  summary["seconds"] = time.time() - clock.start
  report_path = comparison.write_report(workdir, summary, curves, clock.durations())
  print("\n" + comparison.table(summary) + "\n")
  if other_survey is not None:
    print("Another survey's items (no forgetting):\n" + comparison.forgetting_table(other_survey) + "\n")
  for name, ok in summary["checks"].items():
    print(f"  {name.replace('_', ' ')}: {'yes' if ok else 'no'}")
  print(f"\n[{clock.elapsed()}] report: {report_path}  summary: {paths.join(workdir, 'summary.json')}",
        flush=True)


if __name__ == "__main__":
  cli.run(main)   # platform choice and one-line errors (surveylm_jax/cli.py)
