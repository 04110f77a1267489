"""configs/tiny.py on an HF model folder instead of a random init (the tiny architecture written
to disk first), so that PEFT and transformers can load what a run exports on top of it.

python -m launch.train --config=tests/train/tiny_hf_base_config.py:BASE_DIR --workdir=...
"""
import ml_collections

from configs import tiny


def get_config(base_dir: str):
  config = tiny.get_config()
  config.model.random_init = ml_collections.ConfigDict()
  config.model.path = base_dir
  return config


def architecture() -> dict:
  """The HF config dict of the tiny model (what `base_dir` must hold)."""
  return dict(tiny.get_config().model.random_init.to_dict())
