"""The project's own release-layout fixtures: every reader and format, with no ../shared needed.

tests/data/fixtures/release/ is laid out like an AlignSurvey release (task1/test.json,
task3/group/test.json, task4/individual/train.jsonl, foundation_qual.json, ...) and holds small
hand-written Chinese and English records in the released prompt layouts. These tests mirror the
test_shared_* tests of test_data_readers.py (which skip in a clone without the published sample),
and check what the samples cannot: group records whose profiles have members among the individual
records, and the same question with its options listed in different orders.
"""
import collections
import json
import os
import re
import shutil

import numpy as np
import pytest

from surveylm_jax import data
from surveylm_jax.data import json_io, prompt_layouts
from surveylm_jax.data.task_parsers import task_from_path
from surveylm_jax.eval import groups

RELEASE = os.path.join(os.path.dirname(__file__), "fixtures", "release")
TRAILING_COMMA = "foundation_qual.json"  # published with a trailing comma, like the sample

# file: (task named by the path, task found from the first record's layout, record type, level,
#        records, of them in Chinese)
EXPECTED = {
    "task1/test.json": ("task1", "task1", data.RoleInferenceRecord, "individual", 8, 5),
    "task2/test.json": ("task2", "task2", data.InterviewRecord, "individual", 10, 6),
    "task3/individual/test.json": ("task3", "task3", data.StanceRecord, "individual", 16, 8),
    "task3/group/test.json": ("task3_group", "task3_group", data.GroupDistributionRecord, "group", 10, 5),
    "task4/individual/test.json": ("task4", "task4", data.SurveyResponseRecord, "individual", 16, 8),
    "task4/individual/train.jsonl": ("task4", "task4", data.SurveyResponseRecord, "individual", 4, 2),
    "task4/group/test.json": ("task4_group", "task4_group", data.GroupDistributionRecord, "group", 10, 5),
    "foundation_qual.json": ("foundation_qual", "foundation_qual", data.DialogueRecord, "corpus", 3, 1),
    # Without 'foundation_quan' in the path its records read as task 4 (the same layout).
    "foundation_quan.json": ("foundation_quan", "task4", data.SurveyResponseRecord, "corpus", 3, 1),
}


def _path(name):
  return os.path.join(RELEASE, *name.split("/"))


def _read(name, **kw):
  return data.read_alignsurvey(_path(name), lenient=kw.pop("lenient", name == TRAILING_COMMA), **kw)


def _is_zh(record):
  return re.search(r"[\u4e00-\u9fff]", record.prompt) is not None


def test_every_release_fixture_file_has_expectations():
  found = {os.path.relpath(os.path.join(d, f), RELEASE).replace(os.sep, "/")
           for d, _, fs in os.walk(RELEASE) for f in fs if f.endswith((".json", ".jsonl"))}
  assert found == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_release_fixture_reads_with_type_count_and_task_from_path(name):
  task, _, kind, level, count, zh = EXPECTED[name]
  assert task_from_path(_path(name)) == task
  records = _read(name)
  assert len(records) == count and records.report.kept == count and records.report.total_skipped == 0
  assert records.report.task == task
  assert {type(r) for r in records} == {kind} and {r.level for r in records} == {level}
  assert {r.task for r in records} == {task.replace("_group", "")}
  assert sum(map(_is_zh, records)) == zh and 0 < zh < count  # Chinese and English records
  assert [r.source.index for r in records] == list(range(count))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_release_fixture_task_from_content_when_the_path_names_none(tmp_path, name):
  _, content_task, _, _, count, _ = EXPECTED[name]
  copy = tmp_path / ("records" + os.path.splitext(name)[1])
  shutil.copy(_path(name), copy)
  records = data.read_alignsurvey(copy, lenient=name == TRAILING_COMMA)
  assert records.report.task == content_task and len(records) == count
  by_path = _read(name)
  assert [r.output for r in records] == [r.output for r in by_path]


def test_release_task1_multi_valued_and_count_fields():
  records = _read("task1/test.json")
  assert collections.Counter(r.field for r in records) == {
      "家庭年收入": 2, "家庭成员关系": 2, "家里人口数": 1, "household income": 1, "household members": 1,
      "number of children": 1}
  zh_members = next(r for r in records if r.field == "家庭成员关系")
  assert zh_members.target_values == ("配偶", "子女") and zh_members.respondent_id == "11"
  assert zh_members.allowed_values == ("配偶", "子女", "父母", "祖父母/外祖父母", "孙子女")
  count = next(r for r in records if r.field == "家里人口数")
  assert count.allowed_values == () and count.target_values == ("4",)  # free-form: no allowed values
  assert [s for s, _ in count.dialogue] == ["interviewer", "respondent"] * 2
  continued = next(r for r in records if r.field == "家庭成员关系" and r.respondent_id == "13")
  assert continued.dialogue[-1][1] == "主要是我爸妈，他们跟我们住在一起，\n我爱人一般负责陪他们去。"
  income = next(r for r in records if r.field == "household income")
  assert income.allowed_values == ("under $25,000", "$25,000-$49,999", "$50,000-$99,999", "$100,000 or more")
  assert income.target_values == ("$50,000-$99,999",)
  en_members = next(r for r in records if r.field == "household members")
  assert en_members.target_values == ("spouse", "children") and en_members.extra["question_key"] == "Q1"
  children = next(r for r in records if r.field == "number of children")
  assert children.target_values == ("2",) and children.allowed_values[-1] == "3 or more"


def test_release_task2_counts_its_empty_turns():
  records = _read("task2/test.json")
  assert records.report.notes == {"empty_answer": 2, "empty_question": 1}
  assert sum(1 for r in records if r.history) == 8
  first, second, third = records[:3]
  assert first.history == () and first.background["家庭成员关系"] == "配偶, 子女"
  assert first.background["家里人口数"] == "3" and "（2）儿子在县城读高中。" in first.background["额外信息补充"]
  # Released turns run on: "回答:...提问:..." with no line break between them.
  assert third.history == (("您觉得这几年镇上的公共服务有变化吗？", "变化挺大的，路修好了，公交也通到村口了。"),
                           ("具体说说公交吧？", "以前去县城要走半小时到车站，现在村口就有车，一个小时一班。"))
  assert third.question == "看病方面呢？" and second.history == third.history[:1]
  ended = records[4]
  assert (ended.question, ended.answer, ended.history[-1]) == ("", "", ("孩子上学方便吗？", ""))
  english = [r for r in records if not _is_zh(r)]
  assert english[2].history[1] == ("And how are the schools where you live?",
                                   "Pretty good. Class sizes went up last year, though.")
  assert english[0].background["household members"] == "spouse, children"  # a Python dict literal
  assert english[3].background == {"sex": "female", "age": "65 and over",  # 'key: value' lines
                                   "place of residence": "open country"}


def test_release_task3_stances_in_both_languages():
  records = _read("task3/individual/test.json")
  zh = [r for r in records if _is_zh(r)]
  en = [r for r in records if not _is_zh(r)]
  assert {r.stance_label for r in zh} == {"积极", "中立", "消极"}
  assert {r.stance_label for r in en} == {"positive", "neutral", "negative"}
  assert all(r.stance in data.STANCES and r.reason for r in records)
  assert {r.topic for r in zh} == {"公共服务评价", "和父辈相比的生活水平"}
  assert zh[0].background["额外信息补充"] == "（1）受访者家中有两亩茶园；\n（2）受访者去年做过白内障手术。"
  assert zh[0].respondent_id == "31" and en[0].respondent_id == "e301"
  assert all(r.extra["stance"] == r.stance and r.extra["profile"] == dict(r.background) for r in en)


def _options_by_question(records):
  by_question = collections.defaultdict(list)
  for r in records:
    by_question[r.question].append(r)
  return by_question


@pytest.mark.parametrize("name", ["task4/individual/test.json", "task4/group/test.json"])
def test_release_same_question_in_different_option_orders(name):
  by_question = _options_by_question(_read(name))
  assert len(by_question) == 4  # two Chinese and two English questions
  for question, records in by_question.items():
    assert len({tuple(sorted(data.answer_key(t) for t in r.option_texts())) for r in records}) == 1, question
    assert len({tuple(r.option_texts()) for r in records}) >= 2, question


def test_release_shuffled_options_resolve_to_the_same_answer():
  records = _read("task4/individual/test.json")
  rose = [r for r in records if r.question == "与五年前相比，您家的生活水平有什么变化？" and r.answer == "上升了"]
  assert [r.output for r in rose] == ["A. 上升了", "C. 上升了"]  # another letter, the same answer
  assert rose[0].answer_key == rose[1].answer_key and rose[0].respondent_id != rose[1].respondent_id
  assert rose[0].respondent_id == "330182_0105_1" and rose[0].extra["person_id"] == "330182_0105_1"
  for r in records:
    assert r.index_of_answer(r.answer) == r.target_index
    assert r.output_style == "letter_text" or not _is_zh(r)
  en = [r for r in records if not _is_zh(r)]
  assert all(r.answer == r.extra["answer"] for r in en)
  assert collections.Counter(r.output_style for r in en) == {"letter_text": 5, "text": 2, "letter": 1}
  little = [r for r in en if r.answer == "too little"]
  assert [r.target_option.letter for r in little] == ["A", "C"] and len({r.answer_key for r in little}) == 1


def test_release_group_distributions_follow_the_listed_order():
  records = _read("task4/group/test.json")
  for r in records:
    assert sum(r.distribution) == pytest.approx(1.0, abs=0.01) and r.n > 0
  rural, town = records[0], records[1]
  assert rural.group == {"居住地区": "农村"} and town.group == {"居住地区": "城镇"}
  shares = lambda r: {t: round(p, 4) for t, p in zip(r.option_texts(), r.distribution)}
  assert shares(town) == {"差不多": 0.402, "下降了": 0.153, "上升了": 0.445}
  json_output = records[3]  # output as a JSON object whose keys come in another order
  assert json.loads(json_output.output) and shares(json_output) == {"满意": 0.442, "一般": 0.386, "不满意": 0.172}
  male = records[6]
  assert male.group == {"sex": "male"} and male.option_texts() == ["too much", "too little", "about right"]
  assert male.distribution == tuple(male.extra["distribution"]) and male.extra["question_id"] == "nateduc"


# Who belongs to which group profile. zh records carry their profile only as background lines (as
# released); en records also carry the converter's `profile` (its keys without the "your " prefix).
TASK4_MEMBERS = {
    ("与五年前相比，您家的生活水平有什么变化？", "居住地区=农村"): ["330182_0105_1", "330182_0105_2"],
    ("与五年前相比，您家的生活水平有什么变化？", "居住地区=城镇"): ["510107_0311_1", "510107_0311_2"],
    ("与五年前相比，您家的生活水平有什么变化？", "您的性别=女"): ["330182_0105_1", "510107_0311_1"],
    ("总的来说，您对本地的医疗服务满意吗？", "居住地区=农村"): ["330182_0105_1", "330182_0105_2"],
    ("总的来说，您对本地的医疗服务满意吗？", "居住地区=城镇"): ["510107_0311_1", "510107_0311_2"],
    ("nateduc", "sex=female"): ["1042", "1187"],
    ("nateduc", "sex=male"): ["2210", "2356"],
    ("happy", "sex=female"): ["1042", "1187"],
    ("happy", "sex=male"): ["2210", "2356"],
    ("happy", "region=east north central"): ["1042", "2210"],
}
TASK3_MEMBERS = {
    ("公共服务评价", "户籍状态=农村"): ["31", "32"],
    ("公共服务评价", "户籍状态=城镇"): ["33", "34"],
    ("公共服务评价", "性别=女"): ["31", "33"],
    ("和父辈相比的生活水平", "户籍状态=农村"): ["31", "32"],
    ("和父辈相比的生活水平", "户籍状态=城镇"): ["33", "34"],
    ("more public spending on health care", "sex=female"): ["e301", "e303"],
    ("more public spending on health care", "sex=male"): ["e302", "e304"],
    ("more public spending on health care", "highest degree=bachelor's degree"): ["e302", "e303"],
    ("the local police", "sex=female"): ["e301", "e303"],
    ("the local police", "sex=male"): ["e302", "e304"],
}


def _group_name(group):
  return ",".join(f"{k}={v}" for k, v in group.items())


def _background_profile(record):
  return {re.sub(r"^your ", "", k): v for k, v in record.background.items()}


def _profile(record):
  """A respondent's profile from the background lines (en keys lose their "your " prefix); where a
  record also carries the converter's `profile`, the two must agree."""
  profile = _background_profile(record)
  if "profile" in record.extra:
    assert record.extra["profile"] == profile, record.source
  return profile


def _members(group_records, individual, question_of):
  return {(question_of(g), _group_name(g.group)): [
      r.respondent_id for r in individual
      if question_of(r) == question_of(g) and groups.group_matches(_profile(r), g.group)]
      for g in group_records}


def test_release_task4_groups_have_members_and_aggregate_by_answer_text():
  individual = list(_read("task4/individual/test.json"))
  group_records = list(_read("task4/group/test.json"))
  members = _members(group_records, individual, lambda r: r.extra.get("question_id", r.question))
  assert members == TASK4_MEMBERS
  # Each member predicts its own answer with certainty: the aggregate is the members' answer
  # shares in the group record's listed order, whatever order each member saw. The Chinese
  # records carry no `profile`: they are matched by their background lines.
  one_hot = [np.eye(len(r.options))[r.target_index] for r in individual]
  for g, (mean, n) in zip(group_records, groups.aggregate_members(group_records, individual, one_hot)):
    qid = g.extra.get("question_id", g.question)
    ids = members[(qid, _group_name(g.group))]
    answers = [r.answer_key for r in individual
               if r.respondent_id in ids and r.extra.get("question_id", r.question) == qid]
    assert n == len(answers) >= 2, g.source
    assert mean == pytest.approx([answers.count(data.answer_key(t)) / n for t in g.option_texts()]), g.source


def test_release_task3_groups_have_members_and_aggregate_stances():
  individual = list(_read("task3/individual/test.json"))
  group_records = list(_read("task3/group/test.json"))
  for g in group_records:
    assert g.option_texts() in (["积极", "中立", "消极"], ["positive", "neutral", "negative"])
    assert g.extra["topic"] in g.question
  members = _members(group_records, individual, lambda r: r.extra.get("topic", getattr(r, "topic", "")))
  assert members == TASK3_MEMBERS
  labels = [[prompt_layouts.STANCE["zh" if _is_zh(r) else "en"]["labels"][s] for s in data.STANCES]
            for r in individual]
  one_hot = [np.eye(3)[data.STANCES.index(r.stance)] for r in individual]
  aggregated = groups.aggregate_members(group_records, individual, one_hot, member_options=labels)
  for g, (mean, n) in zip(group_records, aggregated):
    ids = members[(g.extra["topic"], _group_name(g.group))]
    stances = [r.stance for r in individual if r.respondent_id in ids and r.topic == g.extra["topic"]]
    assert n == len(stances) >= 2, g.source
    assert mean == pytest.approx([stances.count(s) / n for s in data.STANCES]), g.source


def test_release_trailing_comma_fails_strictly_naming_file_and_line_then_reads_leniently():
  path = _path(TRAILING_COMMA)
  text = open(path, encoding="utf-8").read()
  comma = text.rindex("},") + 1
  line, column = text.count("\n", 0, comma) + 1, comma - text.rindex("\n", 0, comma)
  with pytest.raises(data.DataError) as info:
    data.read_alignsurvey(path)
  assert (info.value.path, info.value.line, info.value.column) == (path, line, column)
  assert info.value.reason == "invalid_json"
  assert "trailing comma" in str(info.value) and f"{path}: line {line}, column {column}" in str(info.value)
  records = data.read_alignsurvey(path, lenient=True)
  assert len(records) == 3 and {r.task for r in records} == {"foundation_qual"}
  assert records.report.repaired == {"trailing_comma": 1} and records.report.total_skipped == 0
  assert [s for s, _ in records[2].turns] == ["采访者", "受访者", "采访者"]
  assert records[0].turns[-1] == ("Interviewer", "Was it hard to find work here?")


def test_release_foundation_quan_answer_matched_by_text():
  english, lettered, chinese = _read("foundation_quan.json")
  assert english.output == "Above average" and english.answer == "above average"
  assert english.target_option.letter == "C" and english.output_style == "text"
  assert english.background["your household income"] == "$75,000 to $89,999"
  assert lettered.answer == "agree" and len(lettered.options) == 5
  assert chinese.answer == "比较幸福" and chinese.background["居住地区"] == "农村"


def test_release_jsonl_split_reads_by_line():
  records = _read("task4/individual/train.jsonl")
  assert [r.source.line for r in records] == [1, 2, 3, 4]
  test_ids = {r.respondent_id for r in _read("task4/individual/test.json")}
  assert not test_ids & {r.respondent_id for r in records}  # train respondents are not test respondents


def _without_output(name, tmp_path):
  """A copy of fixture `name` whose record 1 lacks its output, and the line record 1 starts on."""
  text = open(_path(name), encoding="utf-8").read()
  if name.endswith(".jsonl"):
    records = [json.loads(line) for line in text.splitlines()]
    del records[1]["output"]
    out = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    line = 2
  else:
    records = json.loads(json_io.remove_trailing_commas(text)[0])
    del records[1]["output"]
    out = json.dumps(records, ensure_ascii=False, indent=1)
    line = out.split("\n").index(" {", 2) + 1
  path = tmp_path / os.path.basename(name)
  path.write_text(out, encoding="utf-8")
  return str(path), len(records), line


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_release_record_without_output_strict_names_it_lenient_counts(tmp_path, name):
  path, count, line = _without_output(name, tmp_path)
  task = EXPECTED[name][0]
  with pytest.raises(data.DataError) as info:
    data.read_alignsurvey(path, task=task)
  error = info.value
  assert (error.path, error.record, error.line, error.field, error.reason) == (path, 1, line, "output",
                                                                              "missing_field")
  lenient = data.read_alignsurvey(path, lenient=True, task=task)
  assert len(lenient) == count - 1 and lenient.report.skipped == {"missing_field": 1}


def test_release_folder_builds_every_task_config_of_the_tfds_builder(tmp_path):
  """The release folder is a TFDS manual dir: each task config's split files (JSON and JSONL) turn
  into ArrayRecord rows that re-parse into the records read from the files. (The builder's
  foundation configs read foundation_*/train.json folders; the release keeps those two as files.)"""
  from surveylm_jax.data.sources import tfds_source
  files = [name for name in EXPECTED if name.startswith("task")]
  for name in files:
    folder, split = os.path.dirname(name), os.path.basename(name).split(".")[0]
    config = folder.replace("/", "_") if "/" in folder else folder
    source = tfds_source(f"alignsurvey/{config}", split, data_dir=str(tmp_path / "tfds"), manual_dir=RELEASE)
    rows = sorted((source[i] for i in range(len(source))), key=lambda r: r.source.index)
    assert rows == list(_read(name)), name
