"""Stage I (GSS abortion items, foundation_quan) -> Stage II (GSS 2018 task 4) on the random tiny
model: the whole two-stage path in about a minute on a CPU.

python -m tools.survey_to_alignsurvey --codebook configs/surveys/gss2018_spending.yaml --out data/gss2018
python -m launch.pipeline --config=configs/pipeline_tiny.py --workdir=runs/pipeline_tiny
"""
import ml_collections

from configs import tiny


def get_config():
  config = tiny.get_config()
  config.stage1 = ml_collections.ConfigDict({
      "data": {"train": "data/gss2018/foundation_quan/train.json", "eval": ""},
      "train": {"steps": 4, "lr": 1e-3}})
  config.stage2 = ml_collections.ConfigDict({
      "data": {"train": "data/gss2018/task4/individual/train.json",
               "eval": "data/gss2018/task4/individual/test.json"},
      "train": {"steps": 4, "lr": 1e-3}})
  return config
