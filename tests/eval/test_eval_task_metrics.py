"""Task metrics: answer identity across shuffled letters, text metrics with Chinese, task 1/3."""
import numpy as np
import pytest

from surveylm_jax.eval import task_metrics, text_metrics


def test_same_answer_under_different_letters_is_one_class():
  # Record 0 lists (yes, no), record 1 lists (no, yes): both answered "yes", both predicted "yes".
  options = [["yes", "no"], ["no", "yes"]]
  targets = [0, 1]
  probs = [np.array([0.9, 0.1]), np.array([0.2, 0.8])]
  out = task_metrics.survey_response_metrics(options, targets, probs)
  assert out["accuracy"] == 1.0 and out["macro_f1"] == 1.0
  assert set(out["f1_per_class"]) == {"yes"}   # letters A/B would have made two classes
  assert out["nll"] == pytest.approx(-(np.log(0.9) + np.log(0.8)) / 2)


def test_parse_failures_count_as_wrong_and_are_reported():
  out = task_metrics.survey_response_metrics([["a", "b"]] * 3, [0, 0, 1],
                                             [np.array([1.0, 0.0]), None, np.array([0.0, 1.0])])
  assert out["accuracy"] == pytest.approx(2 / 3)
  assert out["parse_failures"] == 1 and out["scored"] == 2


def test_tokenizer_keeps_chinese():
  assert text_metrics.tokenize("我很满意 the Service!") == ["我", "很", "满", "意", "the", "service"]
  assert text_metrics.rouge_n("我很满意", "我不满意", 1) == pytest.approx(0.75)
  assert text_metrics.rouge_l("我很满意", "我不满意") == pytest.approx(0.75)


def test_rouge_and_bleu_hand_cases():
  assert text_metrics.rouge_n("the cat sat", "the cat sat", 2) == 1.0
  # bigrams: pred {the cat, cat ran}, ref {the cat, cat sat}: overlap 1 -> P = R = 1/2
  assert text_metrics.rouge_n("the cat ran", "the cat sat", 2) == pytest.approx(0.5)
  assert text_metrics.bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(1.0)
  assert text_metrics.bleu(["dog"], ["the cat"]) == 0.0
  out = text_metrics.text_generation_metrics(["the cat", None], ["the cat", "a dog"])
  assert out["missing"] == 1 and out["rouge1"] == pytest.approx(0.5)


def test_reason_similarity():
  assert text_metrics.token_jaccard("a b c", "b c d") == pytest.approx(0.5)
  assert text_metrics.token_cosine("a a b", "a b b") == pytest.approx(4 / 5)


def test_stance_metrics():
  out = task_metrics.stance_metrics(["positive", "negative", "neutral"],
                                    [("positive", "more money helps"), None, ("negative", "x")],
                                    ["more money helps", "r", "y"])
  assert out["accuracy"] == pytest.approx(1 / 3) and out["parse_failures"] == 1
  assert out["reason_jaccard"] == pytest.approx(1 / 3)


def test_role_inference_field_accuracy():
  out = task_metrics.role_inference_metrics(
      ["sex", "sex", "hobbies", "children"],
      [("female",), ("male",), ("reading", "music"), ("2",)],
      [("Female",), None, ("music", "sport"), ("2",)])
  assert out["accuracy_per_field"] == {"children": 1.0, "hobbies": pytest.approx(1 / 3), "sex": 0.5}
  assert out["parse_failures"] == 1
