"""tools.answer_features: the summary statistics on hidden states built with known structure."""
import numpy as np
import pytest

from tools import answer_features


def test_summary_recovers_known_structure():
  rng = np.random.RandomState(0)
  questions = np.repeat(["q1", "q2", "q3"], 40)
  centres = {"q1": np.r_[3.0, 0, 0, 0], "q2": np.r_[0, 3.0, 0, 0], "q3": np.r_[0, 0, 3.0, 0]}
  shared = np.r_[0, 0, 0, 50.0]                    # a large component every question shares
  states = np.stack([centres[q] + shared for q in questions]) + rng.normal(0, 0.3, (120, 4))
  probs = np.tile([0.6, 0.3, 0.1], (120, 1))
  letters = [0] * 40 + [1] * 40 + [2] * 40
  out = answer_features.summarize(states, probs, questions, letters)
  assert out["question_probe_accuracy"] == 1.0
  # Between-question variance: 3 centres at distance 3 -> var 2 per axis over 3 axes = 6 of 6.27.
  assert out["between_question_variance_share"] == pytest.approx(6.0 / (6.0 + 3 * 0.09 + 0.09),
                                                                 abs=0.03)
  assert out["mean_norm_over_rms_spread"] > 15
  assert out["model_letter_share_std_across_questions"] == [0.0, 0.0, 0.0]
  assert out["human_majority_by_question"] == {"q1": "A", "q2": "B", "q3": "C"}
  assert set(out["model_argmax_by_question"].values()) == {"A"}


def test_output_without_an_option_letter_is_refused():
  with pytest.raises(ValueError, match="7/natspac: output 'too much'"):
    answer_features._letter({"output": "too much", "respondent_id": "7",
                             "question_id": "natspac"})
