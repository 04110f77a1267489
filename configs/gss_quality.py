"""The demo's pipeline with budgets for the results table (not part of CI; about 21 minutes on a
2-core CPU): Stage I on the GSS 2018 abortion items, Stage II on the GSS 2018 spending items,
zero-shot and two-stage evaluation on 120 held-out respondents beside the baselines.

    make data
    python -m launch.demo --config=configs/gss_quality.py --workdir=runs/gss_quality
"""
from configs import demo


def get_config():
  config = demo.get_config()
  config.stage1.train.steps = 4
  # 4x the demo's Stage II data (120 batches, ~3,500 answers; ~14 min through the frozen layers),
  # the same 10 passes over it.
  config.stage2.train.cache_lower_layers = 120
  config.stage2.train.epochs = 10
  config.eval.max_respondents = 120
  config.eval.position_bias_records = 40
  config.eval.noise_floor_draws = 200
  return config
