"""Train one stage.

python -m launch.train --config=configs/tiny.py --workdir=runs/tiny [--config.train.lr=3e-4 ...]

A workdir that already holds checkpoints of this run is resumed. A researcher's own module that
registers a loss (README, "Extending") is named in config.extra_modules and weighted like any loss:

python -m launch.train --config=configs/tiny.py --workdir=runs/tiny \
    --config.extra_modules=my_pkg.losses --config.loss.letter_entropy=0.1
"""
from absl import flags, logging
from ml_collections import config_flags

from surveylm_jax import cli, compile_cache, extensions, paths
from surveylm_jax.train import loop

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, metrics and the adapter go here.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  paths.check_writable(_WORKDIR.value, "workdir")   # a bad location fails now, not after training
  logging.set_verbosity(logging.WARNING)   # orbax logs every file rename at INFO
  compile_cache.enable(_CONFIG.value.compile_cache.dir,   # before the first compile
                       min_compile_secs=_CONFIG.value.compile_cache.min_compile_secs)
  extensions.load(_CONFIG.value)   # config.extra_modules, then registry names checked
  loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  cli.run(main)   # platform choice and one-line errors (surveylm_jax/cli.py)
