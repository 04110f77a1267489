"""Answers in context (imputation): survey_response prompts that show the respondent's own answers
to other questions, written by survey_prompts and read back by the task 4 reader."""
import copy

import pytest

from surveylm_jax.data import prompt_layouts, survey_prompts
from surveylm_jax.data.json_io import RawRecord
from surveylm_jax.data.prompt_parsing import PromptError
from surveylm_jax.data.task_parsers import PARSERS

BACKGROUND_EN = [("age", "45"), ("sex", "female")]
BACKGROUND_ZH = [("年龄", "45"), ("性别", "女")]
LABELS_EN = ["too little", "about right", "too much"]
LABELS_ZH = ["满意", "一般", "不满意"]

# Texts chosen to look like the parts the reader must not mistake them for: option lines, a
# question mark, the question marker itself, a tag inside a text.
CONTEXT_EN = [("Are we spending too much, too little, or about the right amount on welfare?",
               "A. too little"),
              ("Survey question: how often do you attend religious services?", "B. about right"),
              ("Your answer: would you say most people can be trusted?", "C. Question: depends")]
CONTEXT_ZH = [("你对政府的工作满意吗？", "A. 满意"),
              ("问卷问题：你多久参加一次宗教活动？", "B. 一般"),
              ("你的回答：大多数人可以信任吗？", "问题：看情况")]

# The prompts as written before context existed; converted files depend on them byte for byte.
BEFORE_EN = ("The survey is in 2018. You need to simulate a real survey respondent answering the following "
             "question.\nYour personal background:\nyour age: 45\nyour sex: female\n\nSurvey question:\n"
             "Do you think we spend too much?\nA. too little\nB. about right\nC. too much\n\n"
             "Please provide your answer directly.")
BEFORE_ZH = ("你需要模拟一位真实的问卷填写者来回答以下问题。\n你的个人背景：\n年龄: 45\n性别: 女\n\n问卷问题：\n"
             "你对生活满意吗？\n选项：\nA. 满意\nB. 一般\nC. 不满意\n\n请直接输出你的答案：")


def _read(instruction, output, **fields):
  return PARSERS["task4"](RawRecord("ctx.json", 0, 1, {"instruction": instruction, "input": "",
                                                        "output": output, **fields}), None)


@pytest.mark.parametrize("context", [(), [], None])
def test_no_context_leaves_the_prompt_unchanged(context):
  assert survey_prompts.survey_response("en", 2018, BACKGROUND_EN, "Do you think we spend too much?",
                                        LABELS_EN) == BEFORE_EN
  assert survey_prompts.survey_response("en", 2018, BACKGROUND_EN, "Do you think we spend too much?",
                                        LABELS_EN, context=context) == BEFORE_EN
  assert survey_prompts.survey_response("zh", None, BACKGROUND_ZH, "你对生活满意吗？", LABELS_ZH,
                                        context=context) == BEFORE_ZH
  record = _read(BEFORE_EN, "B. about right")
  assert "context_pairs" not in record.extra and len(record.cut_spans) == 1


def test_english_layout_and_round_trip():
  text = survey_prompts.survey_response("en", 2018, BACKGROUND_EN, "Do you think we spend too much?",
                                        LABELS_EN, context=CONTEXT_EN)
  assert text == (
      "The survey is in 2018. You need to simulate a real survey respondent answering the following "
      "question.\nYour personal background:\nyour age: 45\nyour sex: female\n\n"
      "Earlier in this survey, you answered:\n"
      "Question: Are we spending too much, too little, or about the right amount on welfare?\n"
      "Your answer: A. too little\n"
      "Question: Survey question: how often do you attend religious services?\n"
      "Your answer: B. about right\n"
      "Question: Your answer: would you say most people can be trusted?\n"
      "Your answer: C. Question: depends\n\n"
      "Survey question:\nDo you think we spend too much?\nA. too little\nB. about right\nC. too much\n\n"
      "Please provide your answer directly.")
  record = _read(text, "C. too much", context=[{"question_id": "natfare", "question": q, "answer": a}
                                               for q, a in CONTEXT_EN])
  assert record.question == "Do you think we spend too much?"
  assert record.option_texts() == LABELS_EN and record.answer == "too much"
  assert dict(record.background) == {"your age": "45", "your sex": "female"}
  assert record.extra["context_pairs"] == tuple(CONTEXT_EN)
  # The converter's metadata rides along untouched in extra, as every unknown field does.
  assert record.extra["context"][0] == {"question_id": "natfare", "question": CONTEXT_EN[0][0],
                                        "answer": "A. too little"}
  # Background is the first cut span (prefix packing keys on it); the context lines come next.
  (bg_start, bg_end), (ctx_start, ctx_end) = record.cut_spans
  assert text[bg_start:bg_end] == "your age: 45\nyour sex: female"
  assert text[ctx_start:ctx_end].startswith("Question: Are we") and text[ctx_end:].startswith("\n\nSurvey question:")
  assert text[slice(*record.options_span)] == "A. too little\nB. about right\nC. too much"


def test_chinese_layout_and_round_trip():
  text = survey_prompts.survey_response("zh", None, BACKGROUND_ZH, "你对生活满意吗？", LABELS_ZH,
                                        context=CONTEXT_ZH)
  assert text == ("你需要模拟一位真实的问卷填写者来回答以下问题。\n你的个人背景：\n年龄: 45\n性别: 女\n\n"
                  "你在本问卷其他问题上的回答：\n"
                  "问题：你对政府的工作满意吗？\n你的回答：A. 满意\n"
                  "问题：问卷问题：你多久参加一次宗教活动？\n你的回答：B. 一般\n"
                  "问题：你的回答：大多数人可以信任吗？\n你的回答：问题：看情况\n\n"
                  "问卷问题：\n你对生活满意吗？\n选项：\nA. 满意\nB. 一般\nC. 不满意\n\n请直接输出你的答案：")
  record = _read(text, "B. 一般")
  assert record.question == "你对生活满意吗？" and record.option_texts() == LABELS_ZH
  assert record.answer == "一般" and dict(record.background) == {"年龄": "45", "性别": "女"}
  assert record.extra["context_pairs"] == tuple(CONTEXT_ZH)


def test_bad_context_is_refused_naming_the_pair():
  write = lambda context: survey_prompts.survey_response("en", 2018, BACKGROUND_EN, "Q?", LABELS_EN,
                                                          context=context)
  with pytest.raises(ValueError, match=r"context\[1\]\.answer: .* one line each"):
    write([("q1", "a1"), ("q2", "line one\nline two")])
  with pytest.raises(ValueError, match=r"context\[0\]\.question: expected non-empty text"):
    write([("  ", "a1")])
  with pytest.raises(ValueError, match=r"context\[0\]: expected a \(question, answer\) pair"):
    write(["q1 a1"])
  with pytest.raises(ValueError, match=r"context\[0\]: expected a \(question, answer\) pair"):
    write([{"question": "q1", "answer": "a1"}])


def test_a_broken_context_block_is_reported():
  text = survey_prompts.survey_response("en", 2018, BACKGROUND_EN, "Q?", LABELS_EN, context=CONTEXT_EN[:1])
  with pytest.raises(PromptError, match="should start with 'Your answer:'"):
    _read(text.replace("Your answer: A. too little", "A. too little"), "A. too little")
  with pytest.raises(PromptError, match="ends with a question and no answer"):
    _read(text.replace("\nYour answer: A. too little", ""), "A. too little")


@pytest.fixture
def no_context_language():
  """A language registered with no context keys, as languages were before they existed."""
  code = "zz_noctx"
  layout = copy.deepcopy(prompt_layouts.KINDS["survey_response"]["en"])
  for key in prompt_layouts.OPTIONAL_KEYS["survey_response"]:
    del layout[key]
  layout.update(question="Question of the survey:", background="Profile:")
  prompt_layouts.register_language(code, {"survey_response": layout})
  yield code
  # Other tests print the registered languages: leave the registry as it was.
  del prompt_layouts.LANGUAGES[code], prompt_layouts.KINDS["survey_response"][code]


def test_a_language_without_context_keys(no_context_language):
  code = no_context_language
  text = survey_prompts.survey_response(code, 2018, BACKGROUND_EN, "Trust?", ["yes", "no"])
  record = _read(text, "A. yes")
  assert record.question == "Trust?" and record.option_texts() == ["yes", "no"]
  with pytest.raises(ValueError, match=r"'zz_noctx'.* no 'context' key.*'context_question', 'context_answer'"):
    survey_prompts.survey_response(code, 2018, BACKGROUND_EN, "Trust?", ["yes", "no"], context=CONTEXT_EN)


def test_context_keys_are_registered_all_or_none():
  layout = copy.deepcopy(prompt_layouts.KINDS["survey_response"]["en"])
  del layout["context_answer"]
  with pytest.raises(ValueError, match=r"has \['context', 'context_question'\] but not \['context_answer'\]"):
    prompt_layouts.register_language("zz_half", {"survey_response": layout})
  assert "zz_half" not in prompt_layouts.LANGUAGES


def test_prefix_key_spans_background_and_context():
  from surveylm_jax.data.prefix_packing import group_by_prefix, prefix_key
  background = [("age", "45"), ("sex", "female")]
  same = [("Are we spending too much on parks?", "B. about right"), ("On roads?", "A. too little")]
  other = [("Are we spending too much on parks?", "B. about right"), ("On space?", "C. too much")]

  def record(question, context):
    text = survey_prompts.survey_response("en", 2018, background, question, ["too little", "too much"],
                                          context=context)
    return _read(text, "A. too little")
  records = [record("On welfare?", same), record("On health?", same), record("On roads?", other),
             record("On welfare?", ())]
  keys = [prefix_key(r) for r in records]
  # Same background and same context: one key that ends after the context block.
  assert keys[0] == keys[1] and keys[0].rstrip().endswith("Your answer: A. too little")
  assert "On welfare?" not in keys[0] and "On health?" not in keys[0]
  assert keys[2] != keys[0] and keys[2].startswith(keys[3])   # another context; no context: background
  assert keys[3].rstrip().endswith("your sex: female")
  assert group_by_prefix(records) == [[0, 1], [2], [3]]
