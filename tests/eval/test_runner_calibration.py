"""config.eval.calibration_data: the runner fits a temperature on validation records only and
reports the model before and after it (tiny random model, as in test_eval_runner.py)."""
import json
import os

import numpy as np
import pytest

from surveylm_jax.cli import ConfigError
from surveylm_jax.data import survey_prompts
from surveylm_jax.eval import calibration, comparison, runner
from tests.eval.test_eval_runner import OPTIONS, QUESTIONS, _write


def _validation_file(tmp_path, people, name="validation.json"):
  """Task-4 records of `people` [(respondent fields, answer index)] on the test questions."""
  rows = []
  for fields, answer in people:
    for qid, question in QUESTIONS.items():
      text = survey_prompts.survey_response("en", 2018, [("sex", "female")], question, OPTIONS)
      rows.append({"instruction": text, "input": "", "output": f"{'ABC'[answer]}. {OPTIONS[answer]}",
                   "question_id": qid, "profile": {"sex": "female"}, **fields})
  path = tmp_path / "task4" / "individual" / name
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(rows))
  return str(path)


def test_calibrated_predictor_fitted_on_validation_only(tmp_path, smollm2_path, monkeypatch):
  config = _write(tmp_path, smollm2_path)
  # Validation answers all "too much": unlike every test respondent's pattern, so a fit that saw
  # test answers would be caught by the spy below.
  val_path = _validation_file(tmp_path, [({"respondent_id": f"v{i}"}, 2) for i in range(3)])
  config.eval.calibration_data = val_path
  config.eval.baselines = ("uniform", "marginal")
  config.eval.position_bias_records = 0
  config.eval.group_prompts = False

  scored, fits = [], []
  scoring = runner.READOUTS["scoring"]

  def spy_readout(model, params, tokenizer, records, config_, label):
    scored.append((label, {r.source.path for r in records}))
    return scoring(model, params, tokenizer, records, config_, label)

  real_fit = calibration.fit_on_distributions

  def spy_fit(probs, answers, **kwargs):
    fits.append(list(answers))
    return real_fit(probs, answers, **kwargs)

  monkeypatch.setitem(runner.READOUTS, "scoring", spy_readout)
  monkeypatch.setattr(calibration, "fit_on_distributions", spy_fit)
  result = runner.evaluate(config, str(tmp_path / "run"))

  # The fit saw the six validation answers, and only records of the validation file were scored for it.
  assert fits == [[2] * 6]
  assert [paths for label, paths in scored if label.startswith("calibration")] == [{val_path}]
  cal = result["calibration"]
  assert cal["data"] == [val_path] and cal["validation_records"] == 6 and cal["validation_scored"] == 6
  assert calibration.T_BOUNDS[0] <= cal["temperature"] <= calibration.T_BOUNDS[1]
  assert cal["validation"]["calibrated"]["nll"] <= cal["validation"]["uncalibrated"]["nll"] + 1e-9

  model, calibrated = result["individual"]["model"], result["individual"]["model_calibrated"]
  assert calibrated["accuracy"] == model["accuracy"] and calibrated["macro_f1"] == model["macro_f1"]
  assert all("ece" in m for m in result["individual"].values())            # baselines too
  assert cal["test"]["calibrated"]["nll"] == calibrated["nll"]
  assert cal["test"]["uncalibrated"]["ece"] == model["ece"]
  group = result["group"]["summary"]["model_calibrated_aggregated"]
  assert cal["test"]["calibrated"]["w1_normalized"] == group["w1_normalized"]
  assert sum(b["count"] for b in cal["test"]["calibrated"]["reliability"]) == 8
  summary = comparison.summarize(result, "model_calibrated")
  assert summary["accuracy"] == model["accuracy"] and summary["nll"] == calibrated["nll"]

  out = tmp_path / "run" / "eval"
  written = json.loads((out / "metrics.json").read_text())
  assert written["calibration"]["temperature"] == pytest.approx(cal["temperature"])
  assert (out / "plots" / "reliability.png").exists()
  report = (out / "report.md").read_text()
  assert "## Calibration (temperature scaling)" in report and "plots/reliability.png" in report
  rows = [json.loads(l) for l in (out / "predictions.jsonl").read_text().splitlines()]
  first = next(r for r in rows if r["task"] == "task4")
  expected = calibration.apply_temperature(np.asarray(first["predicted_distribution"]), cal["temperature"])
  assert first["calibrated_distribution"] == pytest.approx(expected.tolist())


def test_calibration_data_must_not_be_a_test_file(tmp_path, smollm2_path):
  config = _write(tmp_path, smollm2_path)
  test_file = config.eval.data.split(",")[0]
  # The same file under another spelling is still the test file.
  config.eval.calibration_data = os.path.relpath(test_file)
  with pytest.raises(ConfigError, match="config.eval.calibration_data names the test file"):
    runner.evaluate(config, str(tmp_path / "x"))


@pytest.mark.parametrize("fields", [{"respondent_id": "3"}, {"metadata": {"respondent_id": "3"}}])
def test_calibration_data_must_not_share_test_respondents(tmp_path, smollm2_path, fields):
  config = _write(tmp_path, smollm2_path)
  config.eval.calibration_data = _validation_file(tmp_path, [({"respondent_id": "v1"}, 0), (fields, 1)])
  with pytest.raises(ConfigError, match=r"shares 1 respondent_id\(s\) .*\['3'\]"):
    runner.evaluate(config, str(tmp_path / "x"))
