"""Split kinds in the codebook: the representative default, the old profile split, per-item missing
codes, determinism, the command line's report and warnings, and split fields that raise."""
import collections
import json
import math

import pytest

from surveylm_jax.data import DataError
from surveylm_jax.data.codebook import load_codebook
from surveylm_jax.data.survey_converter import convert_survey
from tests.data import split_fixtures as F
from tools import survey_to_alignsurvey

# The old default's failure case: only sex and a coarse, uneven age band (about 35% young).
SEX_AND_AGE = """\
- {column: sex, label: sex, values: {1: male, 2: female}}
- {column: agecat, name: age_group, label: age group, values: {1: 18-44, 2: 45 and over}}"""


def _sides_by_profile(conversion):
  """profile -> {side: respondent ids}, from task-4 records (one row per respondent here)."""
  sides = collections.defaultdict(lambda: collections.defaultdict(set))
  for side in ("train", "test"):
    for r in conversion.files[f"task4/individual/{side}.json"]:
      sides[(r["profile"]["sex"], r["profile"]["age group"])][side].add(r["respondent_id"])
  return sides


def test_default_split_is_representative_where_the_profile_split_was_not(tmp_path):
  _, conversion = F.convert(tmp_path, "{test_fraction: 0.2}", panel=False, demographics=SEX_AND_AGE)
  split = conversion.report["split"]
  assert split["kinds"] == ["respondent"] and abs(split["achieved_test_fraction"] - 0.2) <= 0.02
  assert conversion.report["warnings"] == []
  for profile, sides in _sides_by_profile(conversion).items():
    n = len(sides["train"]) + len(sides["test"])
    assert len(sides["test"]) in (math.floor(0.2 * n), math.ceil(0.2 * n)), profile   # floor or ceil


def test_profile_kind_keeps_the_old_behaviour_and_warns(tmp_path):
  _, conversion = F.convert(tmp_path, "{kinds: [profile], test_fraction: 0.2}", panel=False,
                            demographics=SEX_AND_AGE)
  sides = _sides_by_profile(conversion)
  assert all(len([s for s in v.values() if s]) == 1 for v in sides.values())   # whole profiles move
  achieved = conversion.report["split"]["achieved_test_fraction"]
  assert achieved > 0.25   # 4 profiles of 50-100 respondents: the fraction overshoots
  warnings = conversion.report["warnings"]
  assert any("achieved test fraction" in w for w in warnings)
  assert any("does not represent" in w for w in warnings)
  # Whole profiles moved: every (sex, age group) pair with no test person is named, with the
  # count the achieved fraction would have given it.
  pair_lines = [w for w in warnings if w.startswith("the test side has no respondent with sex/age_group")]
  assert len(pair_lines) == 1
  missing = [p for p, s in sides.items() if not s["test"]]
  assert missing
  for sex, age in missing:
    expected = round((len(sides[(sex, age)]["train"])) * achieved)
    assert f"{sex}/{age} (~{expected} expected)" in pair_lines[0]
  assert sum(pair_lines[0].count(f" {a}/{b} (") for a, b in sides) == len(missing)


def test_a_pair_of_values_missing_from_the_test_side_is_named_where_each_value_is_not():
  from types import SimpleNamespace as NS
  from surveylm_jax.data import splits
  # Every sex and every age band is on the test side, but only as male/young and female/old.
  people = ([("male", "young", "test")] * 5 + [("female", "old", "test")] * 5
            + [("male", "old", "train")] * 40 + [("female", "young", "train")] * 40
            + [("male", "young", "train")] * 15 + [("female", "old", "train")] * 15
            + [("female", "other", "train")] * 4)   # 4 x 0.08 expected: too rare to name
  respondents = [NS(person_id=i, respondent_id=i, demographics={"sex": a, "age": b}, answers={"q": 1})
                 for i, (a, b, _) in enumerate(people)]
  cells = NS(side=lambda rid, c: people[rid][2])
  codebook = NS(split=NS(profile=("sex", "age"), kinds=("respondent",), population_field=None))
  achieved = 10 / len(people)
  [line] = splits._pair_warnings(codebook, respondents, cells, achieved)
  assert line == ("the test side has no respondent with sex/age = female/young (~3 expected), "
                  "male/old (~3 expected): it does not represent the whole")
  assert splits._pair_warnings(codebook, respondents, cells, achieved / 2) == []   # ~1.6 each
  # The population field is left out: its test side holds the listed values on purpose.
  codebook.split = NS(profile=("sex", "age"), kinds=("population",), population_field="age")
  assert splits._pair_warnings(codebook, respondents, cells, achieved) == []


def test_per_question_and_per_column_missing_codes(tmp_path):
  table = F.survey_table()
  codebook, conversion = F.convert(tmp_path, "{}", table=table)
  counts = conversion.report["counts"]
  assert counts["missing:q_arts"] == int(table["q_arts"].isin([4, 9]).sum())   # its own 4, and 9
  assert counts["missing:q_space"] == int((table["q_space"] == 9).sum())      # 4 is an answer there
  assert counts["missing:income"] == int((table["income"] == 0).sum())
  records = conversion.files["task4/individual/train.json"] + conversion.files["task4/individual/test.json"]
  assert any(r["answer"] == "don't know" for r in records if r["question_id"] == "q_space")
  assert all("income" not in r["profile"] for r in records if table["income"][int(r["respondent_id"])] == 0)
  text = F.codebook_text("{}")
  bad = tmp_path / "bad.yaml"
  bad.write_text(text.replace("missing: [9]", "missing: [9, 4]"), encoding="utf-8")
  with pytest.raises(DataError, match=r"field 'missing'.*q_space") as info:
    load_codebook(bad)
  assert info.value.path == str(bad)
  bad.write_text(text.replace("missing: [4]", "missing: [3]"), encoding="utf-8")
  with pytest.raises(DataError, match=r"field 'questions\[4\]\.missing'.*option codes"):
    load_codebook(bad)


DETAILED = ("{kinds: [respondent, question], question_fraction: 0.4, seed: 9, validation_fraction: 0.2, "
            "context_answers: 2}")


def test_same_codebook_same_bytes(tmp_path):
  codebook, first = F.convert(tmp_path, DETAILED)
  again = convert_survey(load_codebook(codebook.path))
  assert F.as_bytes(first) == F.as_bytes(again)
  _, other_seed = F.convert(tmp_path, DETAILED.replace("seed: 9", "seed: 10"))
  assert F.as_bytes(other_seed) != F.as_bytes(first)


def test_cli_writes_validation_files_and_prints_warnings(tmp_path, capsys):
  path = F.write(tmp_path, "{kinds: [profile], test_fraction: 0.2, validation_fraction: 0.1}", panel=False,
                 demographics=SEX_AND_AGE)
  assert survey_to_alignsurvey.main(["--codebook", str(path), "--out", str(tmp_path / "out")]) == 0
  out, err = capsys.readouterr()
  report = json.loads(out)
  assert report == json.load(open(tmp_path / "out" / "conversion_report.json"))
  assert report["respondents_per_split"]["validation"] > 0
  assert (tmp_path / "out" / "task4/individual/validation.json").exists()
  assert (tmp_path / "out" / "task3/individual/validation.json").exists()
  lines = err.splitlines()
  assert lines[0].startswith("split ['profile']: train ") and "achieved test fraction" in lines[0]
  assert [l[len("warning: "):] for l in lines[1:]] == report["warnings"] and report["warnings"]


@pytest.mark.parametrize("split,field,message", [
    ("{kinds: [respondents]}", "split.kinds", r"unknown kinds \['respondents'\]; valid kinds: \['respondent', "
     "'profile', 'question', 'wave', 'population'\\]"),
    ("{test_fracton: 0.2}", "split.test_fracton", "unknown split field"),
    ("{test_fraction: 1.5}", "split.test_fraction", "not in"),
    ("{seed: abc}", "split.seed", "whole number"),
    ("{profile: [shoe_size]}", "split.profile", "unknown demographic 'shoe_size'"),
    ("{kinds: [question], questions: [q_moon]}", "split.questions", "unknown question id 'q_moon'"),
    ("{kinds: [question]}", "split.questions", "exactly one of"),
    ("{kinds: [question], questions: [q_space, q_city, q_roads, q_parks, q_arts]}", "split.questions",
     "none is left to train on"),
    ("{kinds: [question], question_fraction: 0}", "split.question_fraction", "not in"),
    ("{kinds: [wave], wave: {after: 2008}}", "split.wave", "from_year"),
    ("{wave: {from_year: 2008}}", "split.wave", "which would ignore it"),
    ("{kinds: [population], population: {field: province, values: [south]}}", "split.population.field",
     "unknown demographic 'province'"),
    ("{kinds: [population], population: {field: region, values: [east]}}", "split.population.values",
     r"\['east'\] are not values of 'region'"),
    ("{validation_fraction: -0.1}", "split.validation_fraction", "not in"),
    ("{context_answers: -1}", "split.context_answers", "at least 0"),
])
def test_bad_split_fields_name_the_field(tmp_path, split, field, message):
  with pytest.raises(DataError, match=message) as info:
    load_codebook(F.write(tmp_path, split))
  assert info.value.field == field and info.value.path == str(tmp_path / "codebook.yaml")


def test_wave_kind_needs_a_year_column(tmp_path):
  path = F.write(tmp_path, "{kinds: [wave], wave: {from_year: 2008}}")
  path.write_text(path.read_text(encoding="utf-8").replace("year: {column: year}", "year: 2018"), encoding="utf-8")
  with pytest.raises(DataError, match="needs a year column") as info:
    load_codebook(path)
  assert info.value.field == "split.wave"


def test_cli_split_and_outputs_lay_over_the_codebook(tmp_path, capsys):
  path = F.write(tmp_path, "{test_fraction: 0.3, seed: 3, profile: [sex]}")
  out = tmp_path / "out"
  argv = ["--codebook", str(path), "--out", str(out), "--outputs", "task4,foundation_quan",
          "--split", "{kinds: [wave], wave: {from_year: 2008}, validation_fraction: 0.1}"]
  assert survey_to_alignsurvey.main(argv) == 0
  report = json.loads(capsys.readouterr().out)
  split = report["split"]
  assert split["kinds"] == ["wave"] and "test_fraction" not in split and split["seed"] == 3
  assert set(report["records_per_file"]) == {"task4/individual/train.json", "task4/individual/validation.json",
                                             "task4/individual/test.json", "task4/group/train.json",
                                             "task4/group/test.json", "foundation_quan/train.json"}
  assert survey_to_alignsurvey.main(argv[:-1] + ["[wave]"]) == 1
  assert "field 'split'" in capsys.readouterr().err
  assert survey_to_alignsurvey.main(argv[:-1] + ["{kinds: [wave]}"]) == 1
  assert "field 'split.wave'" in capsys.readouterr().err
