"""Parser on the messy forms models write; failures are counted, never guessed."""
import pytest

from surveylm_jax.eval.answer_parsing import ParseTally, parse_option_answer, parse_stance, parse_values

OPTIONS = [("A", "too little"), ("B", "about right"), ("C", "too much")]


@pytest.mark.parametrize("text, index", [
    ("C", 2), ("C.", 2), ("(B)", 1), ("**A**", 0), ("C. too much", 2), ("B) about right", 1),
    ("The answer is C", 2), ("I think the answer is: B.", 1), ("Answer: A. too little", 0),
    ("about right", 1), ("Too much.", 2), ("I would say we spend about right on this.", 1),
    ('{"answer": "B"}', 1), ('```json\n{"answer": "C. too much"}\n```', 2),
    ('```\n{"choice": "too little"}\n```', 0), ("<think>Maybe A or C... hmm</think>\nB", 1),
    ("<think>long reasoning</think>The answer is A", 0), ("The answer is C. too much.", 2),
])
def test_parses(text, index):
  parsed = parse_option_answer(text, OPTIONS)
  assert parsed.ok and parsed.value == index, parsed


@pytest.mark.parametrize("text, reason", [
    ("", "empty"), ("<think>still thinking about A", "unclosed_think"),
    ("I have no idea", "no_option_found"), ("too little or too much", "several_options"),
    ("A. too much", "letter_text_mismatch"), ("The answer is A. too much.", "letter_text_mismatch"),
    ("The answer is D", "letter_not_an_option"),
    ("The answer is a hard one", "no_option_found"),
])
def test_failures_have_reasons(text, reason):
  parsed = parse_option_answer(text, OPTIONS)
  assert not parsed.ok and parsed.reason == reason, parsed


def test_tally_counts_every_failure():
  tally = ParseTally()
  for text in ["A", "", "nothing", "C", "nothing again"]:
    tally.add(parse_option_answer(text, OPTIONS), text)
  s = tally.summary()
  assert s["total"] == 5 and s["failed"] == 3 and s["failures_by_reason"] == {"empty": 1, "no_option_found": 2}
  assert s["failure_rate"] == pytest.approx(0.6)


def test_stance_forms():
  assert parse_stance('```json\n{"predict": "积极", "reason": "支持"}\n```').value == ("positive", "支持")
  assert parse_stance('{"predict": "neutral", "reason": "r"}').value == ("neutral", "r")
  assert parse_stance("<think>x</think> Negative.").value[0] == "negative"
  assert parse_stance('{"reason": "r"}').reason == "json_without_predict"
  assert parse_stance("positive or negative").reason == "several_stances"


def test_values_forms():
  assert parse_values("['5万-20万']", ["5万以下", "5万-20万"]).value == ("5万-20万",)
  assert parse_values("male", ["male", "female"]).value == ("male",)
  assert parse_values("reading, music", ()).value == ("reading", "music")
  assert parse_values("unknown", ["male", "female"]).reason == "not_an_allowed_value"
