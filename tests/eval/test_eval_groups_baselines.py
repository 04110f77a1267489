"""Groups (aggregation, noise floor, gap closed), baselines, fairness and position bias on small
records built with the project's own prompt writer and reader."""
import json

import numpy as np
import pytest

from surveylm_jax.data import read_alignsurvey
from surveylm_jax.data import survey_prompts
from surveylm_jax.eval import baselines, fairness, groups, position_bias

OPTIONS = ["too little", "about right", "too much"]
PEOPLE = [  # (respondent id, sex, place, answer index)
    ("1", "female", "rural", 0), ("2", "female", "rural", 0), ("3", "male", "rural", 1),
    ("4", "male", "city", 2), ("5", "female", "city", 1), ("6", "male", "city", 2),
]


def _individual_file(tmp_path, people, question_id="natenvir", name="individual.json", order=None):
  rows = []
  for rid, sex, place, answer in people:
    background = [("sex", sex), ("place", place)]
    labels = OPTIONS if order is None else [OPTIONS[i] for i in order]
    text = survey_prompts.survey_response("en", 2018, background, "Spending on the environment?", labels)
    letter = "ABC"[labels.index(OPTIONS[answer])]
    rows.append({"instruction": text, "input": "", "output": f"{letter}. {OPTIONS[answer]}",
                 "respondent_id": rid, "question_id": question_id,
                 "profile": {"sex": sex, "place": place}})
  path = tmp_path / name
  path.write_text(json.dumps(rows))
  return list(read_alignsurvey(str(path), task="task4"))


def _group_file(tmp_path, group, distribution, n):
  text = survey_prompts.group_distribution("en", 2018, list(group.items()), "Spending on the environment?",
                                           OPTIONS)
  rows = [{"instruction": text, "input": "", "output": survey_prompts.share_lines(OPTIONS, distribution),
           "question_id": "natenvir", "group": group, "distribution": distribution, "n": n}]
  path = tmp_path / "group.json"
  path.write_text(json.dumps(rows))
  return list(read_alignsurvey(str(path), task="task4_group"))


def test_baselines_by_answer_identity(tmp_path):
  train = _individual_file(tmp_path, PEOPLE)
  # A test record with the options shown in reverse order: baselines must follow the texts.
  test = _individual_file(tmp_path, [("9", "female", "rural", 0)], name="test.json", order=[2, 1, 0])
  fitted = baselines.fit_baselines(["uniform", "majority", "marginal", "logreg"], train)
  np.testing.assert_allclose(fitted["uniform"](test[0]), [1 / 3] * 3)
  # train counts: too little 2, about right 2, too much 2 -> shown reversed, +0.5 smoothing
  np.testing.assert_allclose(fitted["marginal"](test[0]), [2.5 / 7.5, 2.5 / 7.5, 2.5 / 7.5])
  p = fitted["logreg"](test[0])
  assert p.sum() == pytest.approx(1.0)
  assert np.argmax(p) == 2          # shown third = "too little", what rural women said
  with pytest.raises(ValueError, match="valid: \\[.*'logreg', .*'majority', 'marginal', .*'uniform'\\]"):
    baselines.fit_baselines(["oracle"], train)


def test_majority_is_one_hot_on_the_most_common_answer(tmp_path):
  train = _individual_file(tmp_path, PEOPLE[:3])   # too little x2, about right x1
  fitted = baselines.fit_baselines(["majority"], train)
  np.testing.assert_allclose(fitted["majority"](train[2]), [1, 0, 0])


def test_aggregate_members_and_group_metrics(tmp_path):
  people = _individual_file(tmp_path, PEOPLE)
  group = _group_file(tmp_path, {"place": "rural"}, [2 / 3, 1 / 3, 0.0], 3)
  probs = [np.eye(3)[a] * 0.5 + 0.5 / 3 for *_, a in PEOPLE]
  (mean, count), = groups.aggregate_members(group, people, probs)
  assert count == 3
  np.testing.assert_allclose(mean, np.mean(probs[:3], axis=0))
  out = groups.evaluate_groups([{"id": "g", "question_id": "natenvir", "group": {"place": "rural"}, "n": 3,
                                 "human": [2 / 3, 1 / 3, 0.0],
                                 "predictions": {"model": mean, "uniform": [1 / 3] * 3,
                                                 "perfect": [2 / 3, 1 / 3, 0.0]}}], draws=50)
  s = out["summary"]
  assert s["perfect"]["w1"] == pytest.approx(0.0, abs=1e-6)
  # uniform vs human: |1/3-2/3| + |2/3-1| = 2/3
  assert s["uniform"]["w1"] == pytest.approx(2 / 3, abs=1e-6)
  floor = out["noise_floor"]["w1"]
  assert 0 < floor < 2 / 3
  assert s["perfect"]["gap_closed_vs_uniform"] == pytest.approx((2 / 3) / (2 / 3 - floor), rel=1e-5)


def test_noise_floor_shrinks_with_group_size():
  human = [0.2, 0.5, 0.3]
  small = groups.bootstrap_noise_floor(human, 10, draws=400)["w1"]
  large = groups.bootstrap_noise_floor(human, 1000, draws=400)["w1"]
  assert large < small / 5
  with pytest.raises(ValueError, match="group size"):
    groups.bootstrap_noise_floor(human, 0)


def test_gap_closed_hand_cases():
  assert groups.gap_closed(0.5, 0.3, 0.1) == pytest.approx(0.5)
  assert groups.gap_closed(0.5, 0.6, 0.1) == pytest.approx(-0.25)
  assert np.isnan(groups.gap_closed(0.1, 0.1, 0.1))


def test_fairness_worst_group_and_gaps(tmp_path):
  people = _individual_file(tmp_path, PEOPLE)
  tags = [fairness.subgroup_tags(r.extra["profile"], ["place=rural"], ["sex"]) for r in people]
  assert tags[0] == ["place=rural", "sex=female"]
  # right on rural respondents, wrong on city ones
  probs = [np.eye(3)[a if place == "rural" else (a + 1) % 3] for _, _, place, a in PEOPLE]
  out = fairness.fairness_metrics(tags, [r.option_texts() for r in people], [r.target_index for r in people],
                                  probs, ["q"] * 6, min_records=1)
  assert out["subgroups"]["place=rural"]["accuracy"] == 1.0
  acc = out["summary"]["accuracy"]
  assert acc["overall"] == pytest.approx(0.5)
  assert acc["worst_group"] == "sex=male" and acc["worst"] == pytest.approx(1 / 3)
  assert acc["gap_to_overall"]["place=rural"] == pytest.approx(0.5)
  with pytest.raises(ValueError, match="field=value"):
    fairness.subgroup_tags({}, ["rural"], [])


def test_position_bias_orders_and_metrics():
  assert len(position_bias.option_orders(3)) == 6
  orders5 = position_bias.option_orders(5, random_orders=2)
  assert len(orders5) == 5 + 1 + 2 and orders5[0] == [0, 1, 2, 3, 4] and [4, 3, 2, 1, 0] in orders5
  # A model that always puts 0.7 on the first shown slot, whatever is there:
  orders = position_bias.option_orders(3)
  shown = np.array([0.7, 0.2, 0.1])
  out = position_bias.position_bias_metrics([[(o, shown) for o in orders]])
  assert out["a_bias"] == pytest.approx(0.7 - 1 / 3)
  assert out["share_argmax_first_shown"] == 1.0
  np.testing.assert_allclose(out["debiased"][0], [1 / 3] * 3)   # averaging removes the preference
  assert out["order_sensitivity"] > 0.3
  # An order-invariant model: zero sensitivity.
  truth = np.array([0.6, 0.3, 0.1])
  inv = position_bias.position_bias_metrics([[(o, truth[np.asarray(o)]) for o in orders]])
  assert inv["order_sensitivity"] == pytest.approx(0.0, abs=1e-12)
  np.testing.assert_allclose(inv["debiased"][0], truth)


def test_aggregation_maps_shuffled_option_orders(tmp_path):
  listed = _individual_file(tmp_path, PEOPLE[:1])
  reversed_ = _individual_file(tmp_path, PEOPLE[1:2], name="rev.json", order=[2, 1, 0])
  group = _group_file(tmp_path, {"place": "rural"}, [1.0, 0.0, 0.0], 2)
  # both respondents put 0.8 on "too little": first listed, then shown last
  probs = [np.array([0.8, 0.1, 0.1]), np.array([0.1, 0.1, 0.8])]
  (mean, count), = groups.aggregate_members(group, listed + reversed_, probs)
  assert count == 2
  np.testing.assert_allclose(mean, [0.8, 0.1, 0.1])
