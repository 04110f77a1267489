"""End to end: configs/eval_gss_zero_shot.py with a tiny random model writes the whole report."""
import json
import os

import pytest

from configs import eval_gss_zero_shot
from surveylm_jax.data import survey_prompts
from surveylm_jax.eval import eval_limits, runner

OPTIONS = ["too little", "about right", "too much"]
QUESTIONS = {"natenvir": "Spending on the environment?", "natheal": "Spending on health?"}


def _write(tmp_path, smollm2_path):
  individual, train = [], []
  people = [("1", "female", "yes", 0), ("2", "male", "no", 1), ("3", "female", "no", 2), ("4", "male", "yes", 0)]
  for rid, sex, rural, answer in people:
    for qid, question in QUESTIONS.items():
      text = survey_prompts.survey_response("en", 2018, [("sex", sex)], question, OPTIONS)
      row = {"instruction": text, "input": "", "output": f"{'ABC'[answer]}. {OPTIONS[answer]}",
             "respondent_id": rid, "question_id": qid, "profile": {"sex": sex, "rural resident": rural}}
      individual.append(row)
      train.append(dict(row, respondent_id="t" + rid))
  groups = []
  for qid, question in QUESTIONS.items():
    dist = [0.5, 0.25, 0.25]
    groups.append({"instruction": survey_prompts.group_distribution("en", 2018, [("sex", "female")], question,
                                                                     OPTIONS),
                   "input": "", "output": survey_prompts.share_lines(OPTIONS, dist), "question_id": qid,
                   "group": {"sex": "female"}, "distribution": dist, "n": 2})
  paths = {}
  for name, rows in (("task4/individual/test.json", individual), ("task4/individual/train.json", train),
                     ("task4/group/test.json", groups)):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows))
    paths[name] = str(path)
  config = eval_gss_zero_shot.get_config()
  config.eval.data = paths["task4/individual/test.json"] + "," + paths["task4/group/test.json"]
  config.eval.train_data = paths["task4/individual/train.json"]
  config.model.random_init = dict(
      model_type="llama", vocab_size=49152, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048, rms_norm_eps=1e-6,
      tie_word_embeddings=True, rope_theta=10000.0, bos_token_id=1, eos_token_id=2)
  config.model.tokenizer = smollm2_path
  config.eval.batch_size = 4
  config.eval.length_step = 64
  config.eval.position_bias_records = 2
  config.eval.noise_floor_draws = 20
  config.eval.fairness_min_records = 1
  return config


def test_scoring_report(tmp_path, smollm2_path):
  config = _write(tmp_path, smollm2_path)
  result = runner.evaluate(config, str(tmp_path / "run"))
  out = tmp_path / "run" / "eval"
  for name in ("metrics.json", "predictions.jsonl", "report.md", "plots/group_distributions.png",
               "plots/calibration.png", "plots/subgroup_gaps.png"):
    assert (out / name).exists(), name
  assert set(result["individual"]) == {"model", "uniform", "majority", "marginal", "logreg"}
  assert result["individual"]["model"]["n"] == 8 and result["individual"]["model"]["parse_failures"] == 0
  assert {"model_aggregated", "model_group_prompt", "uniform", "marginal"} <= set(result["group"]["summary"])
  assert result["position_bias"]["items"] == 2
  assert "rural resident=yes" in result["fairness"]["model"]["subgroups"]
  rows = [json.loads(l) for l in (out / "predictions.jsonl").read_text().splitlines()]
  assert len(rows) == 8 + 2
  first = rows[0]
  assert first["options"] == OPTIONS and first["target"] == "too little"
  assert sum(first["predicted_distribution"]) == pytest.approx(1.0)
  assert first["subgroups"] == ["rural resident=yes", "sex=female"]
  report = (out / "report.md").read_text()
  assert "| logreg |" in report and "Position bias" in report


def _stance_file(tmp_path):
  rows = []
  for i, stance in enumerate(["positive", "negative"]):
    text = survey_prompts.stance("en", [("sex", "female")], "more spending on health")
    rows.append({"instruction": text, "input": "", "respondent_id": str(i),
                 "output": survey_prompts.stance_output("en", stance, "because")})
  path = tmp_path / "task3" / "individual" / "test.json"
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(rows))
  return str(path)


def test_generate_readout_counts_parse_failures(tmp_path, smollm2_path):
  config = _write(tmp_path, smollm2_path)
  config.eval.data += "," + _stance_file(tmp_path)
  config.eval.max_new_tokens_task.update({"task1": 4, "task2": 4, "task3": 4})
  config.eval.readout = "generate"
  config.eval.max_new_tokens = 3
  config.eval.baselines = ("uniform",)
  result = runner.evaluate(config, str(tmp_path / "gen"))
  parse = result["parse"]
  assert parse["total"] == 8
  # A random tiny model writes noise: whatever failed is counted and scored as wrong.
  assert result["individual"]["model"]["parse_failures"] == parse["failed"]
  assert sum(parse["failures_by_reason"].values()) == parse["failed"]
  rows = [json.loads(l) for l in (tmp_path / "gen" / "eval" / "predictions.jsonl").read_text().splitlines()]
  assert all(r["generated"] is not None for r in rows if r["task"] == "task4")
  stance = result["generated_tasks"]["task3"]
  assert stance["n"] == 2 and stance["parse"]["total"] == 2
  assert stance["parse_failures"] == stance["parse"]["failed"]
  assert sum(r["task"] == "task3" for r in rows) == 2


def test_unknown_readout_is_named(tmp_path, smollm2_path):
  config = _write(tmp_path, smollm2_path)
  config.eval.readout = "sample"
  with pytest.raises(ValueError, match="valid: \\['generate', 'scoring'\\]"):
    runner.evaluate(config, str(tmp_path / "x"))


def test_sample_respondents_keeps_whole_respondents(tmp_path, smollm2_path):
  from surveylm_jax.data import read_alignsurvey
  config = _write(tmp_path, smollm2_path)
  records = list(read_alignsurvey(config.eval.data.split(",")[0]))
  kept, note = eval_limits.sample_respondents(records, 2, seed=0)
  ids = {r.respondent_id for r in kept}
  assert len(ids) == 2 and len(kept) == 4 and "2 of 4 test respondents" in note
  assert kept == [r for r in records if r.respondent_id in ids]      # file order, all their records
  assert eval_limits.sample_respondents(records, 10, seed=0) == (records, None)
  # The key is the prompt text up to the question: here backgrounds only say the sex, so the
  # two women share one key and the two men another (identical prefixes, so sharing is exact).
  keys = {runner.prefix_key(r) for r in records}
  assert len(keys) == 2 and all(k.endswith("\n\n") and "Survey question" not in k for k in keys)
