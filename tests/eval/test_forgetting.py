"""The no-forgetting check's configs: the other survey's files only, raw read-outs, never a file
a stage trained on."""
import ml_collections
import pytest

from configs import demo
from surveylm_jax.cli import ConfigError
from surveylm_jax.eval import forgetting
from surveylm_jax.train import two_stage


def _spec(data):
  return ml_collections.ConfigDict({"data": data, "train_data": "other/train.json",
                                    "baselines": ("uniform", "marginal"), "max_respondents": 50})


def test_eval_config_scores_the_other_survey_with_the_given_adapter():
  config = demo.get_config()
  config.eval.calibration_data = "data/gss2018/task4/individual/validation.json"
  s2 = two_stage.stage_config(config, "stage2")
  c = forgetting.eval_config(s2, _spec("other/test.json"), "runs/x/stage2/adapter")
  assert (c.eval.data, c.eval.train_data, c.eval.adapter) == ("other/test.json", "other/train.json",
                                                              "runs/x/stage2/adapter")
  assert c.eval.calibration_data == "" and c.eval.max_respondents == 50
  assert c.eval.subgroups == ("auto",) and c.eval.position_bias_records == 0
  assert s2.eval.data != c.eval.data          # the stage config itself is left alone


def test_a_training_file_is_refused(tmp_path):
  config = demo.get_config()
  stages = {name: two_stage.stage_config(config, name) for name in ("stage1", "stage2")}
  trained = stages["stage1"].data.train
  with pytest.raises(ConfigError, match="stage1 training file"):
    forgetting.run(stages, _spec(f"other/test.json,./{trained}"), str(tmp_path / "z"),
                   str(tmp_path / "t"))
