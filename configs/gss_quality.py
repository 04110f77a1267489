"""The demo's pipeline with budgets for the results table (not part of CI; about 45 minutes on a
2-core CPU): Stage I on the GSS 2018 abortion items, Stage II on the GSS 2018 spending items,
zero-shot and two-stage evaluation on 120 held-out respondents beside the baselines.

    make data
    python -m launch.demo --config=configs/gss_quality.py --workdir=runs/gss_quality
"""
from configs import demo


def get_config():
  config = demo.get_config()
  config.stage1.train.steps = 4
  config.stage2.train.steps = 48
  config.stage2.train.lr = 1e-3
  # Adapters on every layer (the README's gss_quality table was measured so); the demo trains
  # the top 8 only to fit its time budget.
  config.lora.train_top_layers = 0
  config.eval.max_respondents = 120
  config.eval.position_bias_records = 40
  config.eval.noise_floor_draws = 200
  return config
