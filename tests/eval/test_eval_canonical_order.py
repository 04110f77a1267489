"""Listed option order must not matter: permuting the options of any records (letters remapped)
leaves every metric that does not concern position, and every option loss, unchanged.

Predictions here follow answer identity (a fixed probability per respondent, question and answer
text, as a model that reads the options by meaning would give), so any change in a metric after
permuting comes from the metric code, never from the predictor.
"""
import json
import math
import os
import zlib

import ml_collections
import numpy as np
import pytest

from surveylm_jax.data import (GroupDistributionRecord, SurveyResponseRecord, answer_key,
                               read_alignsurvey, reorder_options, survey_prompts)
from surveylm_jax.data.chat_format import ChatTemplateTokenizer
from surveylm_jax.data.packing import assemble_row
from surveylm_jax.data.question_catalog import QuestionCatalog
from surveylm_jax.eval import baselines
from surveylm_jax.eval.runner import prediction_metrics

RELEASE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "fixtures",
                       "release", "task4")


def _ev(**overrides):
  ev = ml_collections.ConfigDict(dict(noise_floor_draws=20, subgroups=("auto",), subgroup_columns=("auto",),
                                      fairness_min_records=1))
  ev.update(overrides)
  return ev


def _share(*parts) -> float:
  """A fixed pseudo-random positive number per key (stable across runs and processes)."""
  return 0.05 + (zlib.crc32("|".join(map(str, parts)).encode()) % 1000) / 1000.0


def _identity_probs(record, who: str):
  raw = np.array([_share(who, record.question, answer_key(t)) for t in record.option_texts()])
  return raw / raw.sum()


def _permutations(records, seed: int):
  rng = np.random.default_rng(seed)
  return [reorder_options(r, rng.permutation(len(r.options))) for r in records]


def _metrics(individual, group, train):
  fitted = baselines.fit_baselines(("uniform", "marginal", "logreg"), train)
  predictors = {"model": [_identity_probs(r, r.respondent_id) for r in individual]}
  for name, predict in fitted.items():
    predictors[name] = [predict(r) for r in individual]
  group_direct = [_identity_probs(g, "group:" + ",".join(f"{k}={v}" for k, v in sorted(g.group.items())))
                  for g in group]
  got = prediction_metrics(individual, group, predictors, group_direct, QuestionCatalog(), fitted, _ev(),
                           seed=0)
  per_group = [{k: row[k] for k in ("id", "distances", "noise_floor", "members", "ordinal", "human")}
               for row in got["group"]["per_group"]]
  return {"individual": got["individual"], "group": got["group"]["summary"],
          "noise_floor": got["group"]["noise_floor"], "per_group": per_group, "fairness": got["fairness"]}


def _assert_same(a, b, path="metrics"):
  if isinstance(a, dict):
    assert set(a) == set(b), f"{path}: keys differ: {set(a) ^ set(b)}"
    for k in a:
      _assert_same(a[k], b[k], f"{path}.{k}")
  elif isinstance(a, (list, tuple)):
    assert len(a) == len(b), path
    for i, (x, y) in enumerate(zip(a, b)):
      _assert_same(x, y, f"{path}[{i}]")
  elif isinstance(a, float) and isinstance(b, float) and (math.isnan(a) or math.isnan(b)):
    assert math.isnan(a) and math.isnan(b), f"{path}: {a} vs {b}"
  elif isinstance(a, (int, float)) and not isinstance(a, bool):
    assert abs(a - b) <= 1e-6, f"{path}: {a} vs {b}"
  else:
    assert a == b, f"{path}: {a!r} vs {b!r}"


@pytest.fixture(scope="module")
def release_task4():
  individual = list(read_alignsurvey(os.path.join(RELEASE, "individual", "test.json")))
  group = list(read_alignsurvey(os.path.join(RELEASE, "group", "test.json")))
  train = list(read_alignsurvey(os.path.join(RELEASE, "individual", "train.jsonl")))
  assert all(isinstance(r, SurveyResponseRecord) for r in individual + train)
  assert all(isinstance(g, GroupDistributionRecord) for g in group)
  return individual, group, train


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_permuting_listed_options_leaves_every_metric_unchanged(release_task4, seed):
  individual, group, train = release_task4
  before = _metrics(individual, group, train)
  after = _metrics(_permutations(individual, seed), _permutations(group, seed + 100),
                   _permutations(train, seed + 200))
  _assert_same(before, after)
  # The check has teeth: the fixtures hold ordinal groups with members, W1 and RPS values.
  assert before["group"]["model_aggregated"]["ordinal_groups"] > 0
  assert any(row["members"] > 0 for row in before["per_group"])
  assert np.isfinite(before["individual"]["model"]["rps"])
  assert before["fairness"]["model"]["subgroups"]


def _happy_record(tmp_path, rid: str, listed, answer: str) -> SurveyResponseRecord:
  question = "考虑到生活的各个方面，您觉得幸福吗？"
  text = survey_prompts.survey_response("zh", None, [("性别", "男")], question, listed)
  path = tmp_path / f"{rid}_task4.json"
  path.write_text(json.dumps([{"instruction": text, "input": "", "person_id": rid, "question": question,
                               "output": f"{'ABC'[listed.index(answer)]}. {answer}"}], ensure_ascii=False),
                  encoding="utf-8")
  return read_alignsurvey(str(path))[0]


def test_two_respondents_in_different_listed_orders_give_the_true_subgroup_w1(tmp_path):
  """Both answered 幸福, the model gave 不幸福 to both: subgroup W1/(K-1) is 1.0 whatever the
  listed orders (averaging probability vectors by listed position gave 0.0)."""
  a = _happy_record(tmp_path, "p1", ["一般", "幸福", "不幸福"], "幸福")
  b = _happy_record(tmp_path, "p2", ["不幸福", "一般", "幸福"], "幸福")
  model = [np.eye(3)[r.option_texts().index("不幸福")] for r in (a, b)]
  got = prediction_metrics([a, b], [], {"model": model}, [], QuestionCatalog(), {},
                           _ev(subgroups=("性别=男",), subgroup_columns=()), seed=0)
  fair = got["fairness"]["model"]
  assert fair["overall"]["w1_normalized"] == pytest.approx(1.0, abs=1e-6)
  assert fair["subgroups"]["性别=男"]["w1_normalized"] == pytest.approx(1.0, abs=1e-6)
  assert got["individual"]["model"]["accuracy"] == 0.0


def _slot_losses(record, tokenizer, logit_of_answer):
  """option_kl and option_w1 of one record's answer slot, with letter logits set by answer text."""
  import jax.numpy as jnp
  from surveylm_jax.train import losses
  encode = ChatTemplateTokenizer(tokenizer, 4096, catalog=QuestionCatalog())
  example = encode(record)
  assert "option_ids" in example
  row = assemble_row([example], len(example["input_ids"]) + 8)
  vocab = tokenizer.vocab_size
  logits = np.zeros((1, len(row["input_ids"]), vocab), np.float32)
  pos = int(row["option_positions"][0])
  letter_to_text = {o.letter: o.text for o in record.options}
  for o in record.options:
    token = tokenizer(o.letter, add_special_tokens=False)["input_ids"][0]
    logits[0, pos, token] = logit_of_answer[answer_key(letter_to_text[o.letter])]
  batch = {k: jnp.asarray(v)[None] for k, v in row.items()}
  return {name: float(losses.get(name)(jnp.asarray(logits), batch)[0]) for name in ("option_kl", "option_w1")}


def test_option_losses_do_not_depend_on_the_listed_order(release_task4, smollm2_tokenizer):
  individual, _, _ = release_task4
  record = next(r for r in individual if r.output_style == "letter_text" and len(r.options) == 3)
  logit_of_answer = {answer_key(t): float(i) for i, t in enumerate(record.option_texts()[::-1])}
  base = _slot_losses(record, smollm2_tokenizer, logit_of_answer)
  for order in ([1, 2, 0], [2, 0, 1], [2, 1, 0]):
    moved = _slot_losses(reorder_options(record, order), smollm2_tokenizer, logit_of_answer)
    assert moved == pytest.approx(base, abs=1e-6)
  assert base["option_w1"] > 0.05
