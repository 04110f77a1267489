"""Readers: shared samples, the project's fixtures, and every kind of bad input."""
import json
import os
import re

import pytest

from surveylm_jax import data
from surveylm_jax.data import json_io
from tests.shared_sample import shared_sample

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
# The test_shared_* tests read ../shared/alignsurvey_sample and skip in a clone without it;
# test_data_release_fixtures.py mirrors them on the project's own release-layout fixtures.

SHARED_COUNTS = {"task1.json": ("task1", 240), "task2.json": ("task2", 632), "task3.json": ("task3", 160),
                 "task4_chip.json": ("task4", 3120)}


@pytest.mark.parametrize("name", sorted(SHARED_COUNTS))
def test_shared_samples_read_with_counts_and_task(name):
  task, count = SHARED_COUNTS[name]
  records = data.read_alignsurvey(shared_sample(name))
  assert len(records) == count and records.report.kept == count
  assert {r.task for r in records} == {task[:5]}
  assert records.report.total_skipped == 0


def test_shared_task2_counts_its_empty_turns():
  records = data.read_alignsurvey(shared_sample("task2.json"))
  assert records.report.notes == {"empty_answer": 20, "empty_question": 1}
  assert sum(1 for r in records if r.history) == 632 - 240


@pytest.mark.parametrize("name,task", [("foundation_qual.json", "foundation_qual"),
                                       ("foundation_quan.json", "foundation_quan")])
def test_shared_invalid_json_names_line_and_column_then_reads_leniently(name, task):
  path = shared_sample(name)
  with pytest.raises(data.DataError) as info:
    data.read_alignsurvey(path)
  assert (info.value.path, info.value.line, info.value.column) == (path, 6, 4)
  assert "trailing comma" in str(info.value) and "line 6, column 4" in str(info.value)
  records = data.read_alignsurvey(path, lenient=True)
  assert len(records) == 1 and records[0].task == task
  assert records.report.repaired == {"trailing_comma": 1}


def test_shared_foundation_quan_answer_matched_by_text():
  record = data.read_alignsurvey(shared_sample("foundation_quan.json"), lenient=True)[0]
  assert record.output == "Average" and record.answer == "average" and record.target_option.letter == "B"
  assert record.background["your household income"] == "$20,000 to $24,999"


def test_chip_answers_are_identified_by_text_not_letter():
  records = data.read_alignsurvey(os.path.join(FIXTURES, "task4_mixed.json"))
  first, second, english = records
  assert first.output == "B. 一般" and second.output == "C. 一般"
  assert first.answer_key == second.answer_key == data.answer_key("一般")
  assert [o.text for o in first.options] == ["满意", "一般", "不满意"]
  assert first.respondent_id == "p001" and first.question == "您对本地的公共交通满意吗？"
  assert english.output_style == "text" and english.answer == "never" and english.respondent_id == "17"


def test_fixture_records_parse_to_typed_fields():
  t1 = data.read_alignsurvey(os.path.join(FIXTURES, "task1.json"))[0]
  assert (t1.field, t1.target_values) == ("家庭成员关系", ("配偶", "孙子女"))
  assert t1.allowed_values == ("配偶", "子女", "孙子女", "父母") and len(t1.dialogue) == 4
  t2 = data.read_alignsurvey(os.path.join(FIXTURES, "task2.json"))[0]
  assert t2.history == (("您平时主要靠什么出行？", "坐公交车。"), ("家里都有谁一起住？", "老伴和孙子。"))
  assert t2.question == "您觉得社区的养老服务怎么样？" and t2.background["家庭成员关系"] == "配偶, 孙子女"
  t3 = data.read_alignsurvey(os.path.join(FIXTURES, "task3.json"))[0]
  assert (t3.stance, t3.stance_label, t3.topic) == ("neutral", "中立", "社区养老服务")
  assert t3.background["额外信息补充"] == "（1）退休教师；\n（2）住在农村。"
  qual = data.read_alignsurvey(os.path.join(FIXTURES, "foundation_qual.json"))[0]
  assert [s for s, _ in qual.turns] == ["Interviewer", "Interviewee"]


def test_group_distributions_in_option_order_from_lines_and_json():
  records = data.read_alignsurvey(os.path.join(FIXTURES, "task4_group.jsonl"))
  assert records.report.task == "task4_group"
  english, zh_lines, zh_json = records
  assert english.distribution == pytest.approx((0.505, 0.2, 0.295)) and english.n == 41
  assert english.group == {"age group": "76 and over", "rural resident": "yes"}
  assert zh_lines.distribution == pytest.approx((0.45, 0.27, 0.28))
  assert zh_json.distribution == pytest.approx((0.5, 0.3, 0.2))  # JSON keys in another order


def _write(tmp_path, records, name="task4.json"):
  path = tmp_path / name
  path.write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
  return str(path)


def _task4_records():
  with open(os.path.join(FIXTURES, "task4_mixed.json"), encoding="utf-8") as f:
    return json.load(f)


BAD_TASK4 = {
    "missing_field": (lambda r: r.pop("output"), "output"),
    "target_not_in_options": (lambda r: r.update(output="D. 很满意"), "output"),
    "target_mismatch": (lambda r: r.update(output="A. 一般"), "output"),
    "duplicate_letter": (lambda r: r.update(instruction=r["instruction"].replace("\nC. ", "\nB. ")),
                         "instruction"),
    "empty_option": (lambda r: r.update(instruction=re.sub(r"\nA\. [^\n]+", "\nA. ", r["instruction"])),
                     "instruction"),
}


@pytest.mark.parametrize("reason", sorted(BAD_TASK4))
def test_bad_task4_record_strict_names_file_record_field_lenient_counts(tmp_path, reason):
  corrupt, field = BAD_TASK4[reason]
  records = _task4_records()
  corrupt(records[1])
  path = _write(tmp_path, records)
  with pytest.raises(data.DataError) as info:
    data.read_alignsurvey(path)
  error = info.value
  assert (error.path, error.record, error.field, error.reason) == (path, 1, field, reason)
  assert f"{path}: record 1" in str(error)
  lenient = data.read_alignsurvey(path, lenient=True)
  assert len(lenient) == 2 and lenient.report.skipped == {reason: 1}


def test_distribution_that_does_not_sum_to_one_is_rejected(tmp_path):
  lines = open(os.path.join(FIXTURES, "task4_group.jsonl"), encoding="utf-8").read().splitlines()
  bad = json.loads(lines[1])
  bad["output"] = "A.满意: 45%\nB.一般: 27%\nC.不满意: 30%"
  path = tmp_path / "task4_group.jsonl"
  path.write_text("\n".join([lines[0], json.dumps(bad, ensure_ascii=False), lines[2]]) + "\n", encoding="utf-8")
  with pytest.raises(data.DataError) as info:
    data.read_alignsurvey(str(path))
  assert (info.value.record, info.value.line, info.value.field, info.value.reason) == (1, 2, "output",
                                                                                        "distribution_sum")
  assert "1.0200" in str(info.value)
  assert data.read_alignsurvey(str(path), lenient=True).report.skipped == {"distribution_sum": 1}


def test_jsonl_syntax_error_names_line_and_column(tmp_path):
  path = tmp_path / "task4.jsonl"
  good = json.dumps(_task4_records()[0], ensure_ascii=False)
  path.write_text(good + "\n" + '{"instruction": "x", "output": }\n' + good + "\n", encoding="utf-8")
  with pytest.raises(data.DataError) as info:
    data.read_alignsurvey(str(path))
  assert (info.value.line, info.value.column) == (2, 32)  # the "}" where a value should be
  lenient = data.read_alignsurvey(str(path), lenient=True)
  assert len(lenient) == 2 and lenient.report.skipped == {"invalid_json": 1}


def test_error_inside_a_record_names_its_line(tmp_path):
  text = json.dumps(_task4_records(), ensure_ascii=False, indent=1)
  broken = text.replace('"person_id": "p002"', '"person_id" "p002"')
  path = tmp_path / "task4.json"
  path.write_text(broken, encoding="utf-8")
  line = broken[:broken.index('"person_id" "p002"')].count("\n") + 1
  with pytest.raises(data.DataError) as info:
    data.read_alignsurvey(str(path))
  assert info.value.line == line and "Expecting ':'" in str(info.value)


def test_trailing_comma_repair_keeps_strings_and_lines():
  text = '[\n {"a": "x,]", "b": [1, 2,],},\n]'
  repaired, count = json_io.remove_trailing_commas(text)
  assert count == 3 and json.loads(repaired) == [{"a": "x,]", "b": [1, 2]}]
  assert repaired.count("\n") == text.count("\n")


def test_unknown_task_lists_valid_names(tmp_path):
  path = _write(tmp_path, _task4_records(), "records.json")
  with pytest.raises(data.DataError, match="valid tasks: .*task4_group"):
    data.read_alignsurvey(path, task="task5")
  assert data.read_alignsurvey(path)[0].task == "task4"  # detected from the content


@pytest.mark.parametrize("name,text", [("task4.json", "[]"), ("task4.json", " [\n ]\n"),
                                       ("task4.jsonl", ""), ("task4.jsonl", "\n\n"), ("task4.json", "")])
def test_a_file_with_no_records_is_an_error_naming_it_unless_allowed(tmp_path, name, text):
  path = tmp_path / name
  path.write_text(text, encoding="utf-8")
  with pytest.raises(data.DataError, match="holds no records") as info:
    data.read_alignsurvey(path)
  assert info.value.path == str(path) and str(info.value).startswith(f"{path}: ")
  assert info.value.reason == "empty_file"
  records = data.read_alignsurvey(path, allow_empty=True)
  assert list(records) == [] and records.report.kept == 0


def test_lenient_file_whose_every_line_is_broken_reports_skips_not_emptiness(tmp_path):
  path = tmp_path / "task4.jsonl"
  path.write_text('{"instruction": }\n', encoding="utf-8")
  records = data.read_alignsurvey(path, lenient=True)
  assert list(records) == [] and records.report.skipped == {"invalid_json": 1}


def test_training_read_records_passes_allow_empty(tmp_path):
  from surveylm_jax.train.data import read_records
  empty = tmp_path / "empty.json"
  empty.write_text("[]", encoding="utf-8")
  full = os.path.join(FIXTURES, "task4_mixed.json")
  with pytest.raises(data.DataError, match=f"{empty}: the file holds no records"):
    read_records(f"{full},{empty}", False, -1)
  assert len(read_records(f"{full},{empty}", False, -1, allow_empty=True)) == 3
