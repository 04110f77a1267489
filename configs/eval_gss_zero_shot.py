"""Zero-shot SmolLM2-135M-Instruct on the GSS 2018 spending test split (task 4 individual + group),
beside the uniform / majority / marginal / logistic-regression baselines.

    python -m tools.survey_to_alignsurvey --codebook configs/surveys/gss2018_spending.yaml --out data/gss2018
    python -m launch.evaluate --config=configs/eval_gss_zero_shot.py --workdir=runs/gss_zero_shot
"""
from configs import base


def get_config():
  config = base.get_config()
  config.model.path = "checkpoints/smollm2-135m-instruct"
  config.eval.data = "data/gss2018/task4/individual/test.json,data/gss2018/task4/group/test.json"
  config.eval.train_data = "data/gss2018/task4/individual/train.json"
  config.eval.readout = "scoring"
  config.eval.batch_size = 32
  return config
