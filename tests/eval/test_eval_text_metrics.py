"""Text metrics from sacrebleu and rouge_score: hand-computed values in English and Chinese."""
import importlib.metadata
import json
import math

import pytest
from rouge_score import rouge_scorer

from surveylm_jax.eval import text_metrics
from tools import text_metrics_crosscheck


def test_identical_text_scores_one_in_both_scripts():
  for text, tok in (("the cat sat on the mat", "13a"), ("我对现在的收入比较满意。", "zh")):
    out = text_metrics.text_generation_metrics([text], [text])
    assert out["bleu"] == pytest.approx(1.0) and out["sentence_bleu"] == pytest.approx(1.0)
    assert (out["rouge1"], out["rouge2"], out["rougeL"]) == (1.0, 1.0, 1.0)
    assert out["bleu_tokenizer"] == tok and f"tok:{tok}" in out["bleu_signature"]


def test_english_corpus_bleu_by_hand():
  # Clipped n-gram matches 5/6, 3/5, 2/4, 1/3 and equal lengths (BP 1): BLEU = (1/12) ** (1/4).
  score = text_metrics.corpus_bleu(["the cat sat on the mat"], ["the cat sat on a mat"])
  assert score.score / 100 == pytest.approx((1 / 12) ** 0.25)
  assert score.precisions == pytest.approx([500 / 6, 60, 50, 100 / 3])


def test_chinese_bleu_splits_characters_and_keeps_punctuation():
  # 'zh': 我 很 满 意 。 vs 我 很 满 意 ！ -> matches 4/5, 3/4, 2/3, 1/2; product 1/5.
  assert text_metrics.bleu(["我很满意。"], ["我很满意！"]) == pytest.approx(0.2 ** 0.25)
  # '13a' would see one token per sentence and find no match at all.
  assert text_metrics.corpus_bleu(["我很满意。"], ["我很满意！"], tokenizer="13a").score == 0.0


def test_short_chinese_sentence_bleu_uses_effective_order():
  # Two characters have no 3- or 4-grams; without effective order sacrebleu scores this 0.
  assert text_metrics.sentence_bleu("是的", "是的") == (pytest.approx(1.0), "zh")
  assert text_metrics.sentence_bleu("yes it is", "yes it is") == (pytest.approx(1.0), "13a")


def test_chinese_rouge_by_hand():
  # 我很满意服务 vs 我对服务满意, 6 characters each. Unigram overlap 我满意服务 = 5 -> 5/6;
  # bigrams shared 满意, 服务 = 2 of 5 -> 0.4; longest common subsequence 我服务 = 3 -> 0.5.
  out = text_metrics.rouge_scores("我很满意服务", "我对服务满意")
  assert out == {"rouge1": pytest.approx(5 / 6), "rouge2": pytest.approx(0.4), "rougeL": pytest.approx(0.5)}
  assert text_metrics.rouge_l("我很满意服务", "我对服务满意") == pytest.approx(0.5)
  assert text_metrics.rouge_n("我很满意服务", "我对服务满意", 2) == pytest.approx(0.4)


def test_rouge_score_takes_the_reference_first():
  # rouge_score takes (reference, prediction); the prediction here is half the reference.
  scores = text_metrics._rouge(("rouge1",)).score("我很满意", "我很")["rouge1"]
  assert (scores.precision, scores.recall) == (1.0, 0.5)
  assert text_metrics.rouge_n("我很", "我很满意", 1) == pytest.approx(2 / 3)


def test_rouge_score_default_tokenizer_drops_chinese():
  # Why CjkTokenizer exists: the library default keeps only [a-z0-9].
  assert rouge_scorer.RougeScorer(["rouge1"]).score("我很满意", "我很满意")["rouge1"].fmeasure == 0.0
  assert text_metrics.rouge_n("我很满意", "我很满意", 1) == 1.0


def test_none_predictions_score_zero_and_are_counted():
  out = text_metrics.text_generation_metrics(["the cat sat on the mat", None], ["the cat sat on the mat", "a dog"])
  assert out["n"] == 2 and out["missing"] == 1
  assert out["rouge1"] == pytest.approx(0.5) and out["rougeL"] == pytest.approx(0.5)
  assert out["sentence_bleu"] == pytest.approx(0.5)
  # The empty hypothesis stays in the corpus: 6 hypothesis tokens for 8 reference tokens.
  assert out["bleu"] == pytest.approx(math.exp(1 - 8 / 6))
  assert out["sentence_bleu_tokenizers"] == {"13a": 1}
  none = text_metrics.text_generation_metrics([None, None], ["我很满意", "a dog"])
  assert none["missing"] == 2 and none["bleu"] == 0.0 and none["rouge1"] == 0.0


def test_tokenizer_chosen_per_corpus_and_per_record():
  assert text_metrics.bleu_tokenizer(["hello", "你好"]) == "zh"
  assert text_metrics.bleu_tokenizer(["hello", "world"]) == "13a"
  out = text_metrics.text_generation_metrics(["你好", "hello world"], ["你好", "hello world"])
  assert out["bleu_tokenizer"] == "zh" and out["sentence_bleu_tokenizers"] == {"zh": 1, "13a": 1}


def test_output_is_json_and_names_library_versions():
  out = text_metrics.text_generation_metrics(["我很满意"], ["我不满意"])
  json.dumps(out)
  assert out["library_versions"] == {"sacrebleu": importlib.metadata.version("sacrebleu"),
                                     "rouge-score": importlib.metadata.version("rouge-score")}
  assert out["library_versions"]["sacrebleu"] in out["bleu_signature"]


def test_bad_input_is_refused():
  with pytest.raises(ValueError, match="2 predictions but 1 references"):
    text_metrics.text_generation_metrics(["a", "b"], ["a"])
  with pytest.raises(TypeError, match="reference 0 is NoneType"):
    text_metrics.text_generation_metrics(["a"], [None])
  with pytest.raises(TypeError, match="prediction 0 is int"):
    text_metrics.bleu([3], ["a"])
  with pytest.raises(ValueError, match="ROUGE-0"):
    text_metrics.rouge_n("a", "a", 0)


def test_crosscheck_predictions_shift_within_respondent():
  respondents = ["a", "a", "b", "b", "c"]
  texts = ["x", "y", "z", "z", "w"]
  # b's two texts are equal, so they fall back to the file's next differing text; c has only one.
  assert text_metrics_crosscheck.shifted_predictions(respondents, texts) == ["y", "x", "w", "w", "x"]
  with pytest.raises(ValueError, match="two different texts"):
    text_metrics_crosscheck.shifted_predictions(["a", "b"], ["same", "same"])


def test_crosscheck_starts_from_legacy_and_ends_at_library():
  # crosscheck raises if sacrebleu with the legacy settings misses legacy_bleu, or its last step
  # misses text_metrics.
  refs = ["我认为共同富裕是全体人民的富裕。", "收入和经济形势关联度很高，比较纠结。", "区别不大。",
          "The service got better, I think.", "我对公共服务比较满意，比以前好多了！"]
  report = text_metrics_crosscheck.crosscheck("t", ["1", "1", "1", "2", "2"], refs)
  assert "(= legacy)" in report and "(= library)" in report
