"""Zero-shot SmolLM2-135M-Instruct on one file of the AlignSurvey public sample (the release's own
records: Chinese, options listed in shuffled orders). The argument names the file:

    python -m launch.evaluate --config=configs/eval_alignsurvey_sample.py:task4_chip \
        --workdir=runs/sample/task4_chip
    # task1 | task2 | task3 | task4_chip; the sample folder: --config.eval.data=PATH

The sample has no training split, so no baselines are fitted; option orders come from the shipped
catalog (surveylm_jax/data/catalogs/alignsurvey.yaml) and the stance order.
"""
from configs import base

SAMPLE_DIR = "../shared/alignsurvey_sample"
FILES = ("task1", "task2", "task3", "task4_chip")


def get_config(arg: str = "task4_chip"):
  if arg not in FILES:
    raise ValueError(f"unknown sample file {arg!r}; valid: {list(FILES)}")
  config = base.get_config()
  config.model.path = "checkpoints/smollm2-135m-instruct"
  config.eval.data = f"{SAMPLE_DIR}/{arg}.json"
  config.eval.baselines = ()
  config.eval.readout = "scoring"
  config.eval.batch_size = 16
  return config
