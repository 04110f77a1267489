"""The SurveyLM recipe from one config: Stage I -> Stage II (from the Stage I adapter) -> eval.

python -m launch.pipeline --config=configs/pipeline_tiny.py --workdir=runs/pipeline_tiny

See `surveylm_jax.train.two_stage` for the config layout (`stage1` / `stage2` sections).
"""
from absl import flags, logging
from ml_collections import config_flags

from surveylm_jax import cli, compile_cache, extensions, paths
from surveylm_jax.train import two_stage

_CONFIG = config_flags.DEFINE_config_file("config", None, "Pipeline config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Root folder of the stages.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  paths.check_writable(_WORKDIR.value, "workdir")   # a bad location fails now, not after training
  logging.set_verbosity(logging.WARNING)
  compile_cache.enable(_CONFIG.value.compile_cache.dir,   # before the first compile
                       min_compile_secs=_CONFIG.value.compile_cache.min_compile_secs)
  extensions.load(_CONFIG.value)   # config.extra_modules, then registry names checked
  two_stage.run(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  cli.run(main)   # platform choice and one-line errors (surveylm_jax/cli.py)
