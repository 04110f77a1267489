"""Evaluates a model (base, PEFT adapter via --config.eval.adapter) on AlignSurvey task-4 test
files beside the baselines; writes DIR/eval/{metrics.json, predictions.jsonl, report.md, plots/}.

    python -m launch.evaluate --config=configs/eval_gss_zero_shot.py --workdir=runs/gss_zero_shot

Read-outs, baselines, metrics and prompt languages of a researcher's own module (README,
"Extending") come from modules named in config.extra_modules:

    python -m launch.evaluate --config=configs/eval_gss_zero_shot.py --workdir=runs/mine \
        --config.extra_modules=my_pkg.ext --config.eval.readout=NAME --config.eval.metrics=NAME
"""
from absl import flags
from ml_collections import config_flags

from surveylm_jax import cli, compile_cache, extensions, paths

_CONFIG = config_flags.DEFINE_config_file("config", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where eval/ (metrics, predictions, report) goes.",
                               required=True)


def main(argv):
  del argv
  paths.check_writable(_WORKDIR.value, "workdir")   # a bad location fails now, not after training
  compile_cache.enable(_CONFIG.value.compile_cache.dir,   # before the first compile
                       min_compile_secs=_CONFIG.value.compile_cache.min_compile_secs)
  extensions.load(_CONFIG.value)   # config.extra_modules, then registry names checked
  from surveylm_jax.eval import runner
  result = runner.evaluate(_CONFIG.value, _WORKDIR.value)
  print(f"wrote {_WORKDIR.value}/eval/report.md ({result['seconds']:.0f} s)")


if __name__ == "__main__":
  cli.run(main)   # platform choice and one-line errors (surveylm_jax/cli.py)
