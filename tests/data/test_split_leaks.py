"""Leak rules over converted outputs, for every split kind and some combinations.

Whatever the kinds: no held-out question (text or id) in any training-side file of any task; no
test-wave year and no held-out population value on the training side; no target question in its
own record's context; no person on both sides (person-level kinds); no validation person in any
train file; group records counted from their own side's cells only.
"""
import collections
import json

import pytest

from surveylm_jax.data import prompt_layouts
from tests.data import split_fixtures as F

REGION = {1: "north", 2: "south", 3: "west"}


def _training(name: str) -> bool:
  return name.endswith("/train.json") or name.endswith("/validation.json")


def _persons(files, rows, panel, select) -> set:
  return {str(rows[r["respondent_id"]]["pid"]) if panel else r["respondent_id"]
          for name, records in files.items() if select(name) for r in records if "respondent_id" in r}


def check_leaks(codebook, conversion, table):
  spec, split, files = codebook.split, conversion.report["split"], conversion.files
  rows = {str(r["rid"]): r for r in table.to_dict("records")}
  panel = bool(codebook.panel_id)
  person_rows = collections.defaultdict(list)
  for row in rows.values():
    person_rows[str(row["pid"]) if panel else str(row["rid"])].append(row)
  held = split.get("held_out_questions", [])
  training = {n: records for n, records in files.items() if _training(n)}
  for name, records in training.items():
    blob = json.dumps(records, ensure_ascii=False)
    for column in held:
      assert f'"{column}"' not in blob and F.QUESTIONS[column] not in blob, (name, column)
  if held:
    assert {r["question_id"] for r in files["task4/individual/test.json"]} <= set(held)
  test_year = ((lambda y: y >= spec.wave_from_year) if spec.wave_from_year is not None
               else (lambda y: y in spec.wave_years))
  for name, records in training.items():
    for r in records:
      if "respondent_id" in r:
        row = rows[r["respondent_id"]]
        if "wave" in spec.kinds:
          assert not test_year(row["year"]), (name, r["respondent_id"])
        if "population" in spec.kinds:
          person = str(row["pid"]) if panel else r["respondent_id"]
          assert not {REGION[p["region"]] for p in person_rows[person]} & set(spec.population_values)
      if "wave" in spec.kinds and "group" in r:
        assert not any(str(y) in r["instruction"] for y in range(2000, 2011) if test_year(y)), name
      if "population" in spec.kinds:
        assert not set((r.get("group") or {}).values()) & set(spec.population_values), name
        assert not set((r.get("profile") or {}).values()) & set(spec.population_values), name
  for name in ("task4/individual/train.json", "task4/individual/validation.json", "task4/individual/test.json"):
    for r in files.get(name, []):
      ids = [c["question_id"] for c in r.get("context", [])]
      assert r["question_id"] not in ids and not set(ids) & set(held), (name, r["question_id"], ids)
      assert len(ids) <= spec.context_answers
      assert all(c["question"] in r["instruction"] for c in r.get("context", []))
  if set(spec.kinds) - {"question"}:
    tested = _persons(files, rows, panel, lambda n: n.endswith("test.json"))
    assert not _persons(files, rows, panel, _training) & tested
  assert not (_persons(files, rows, panel, lambda n: n.endswith("validation.json"))
              & _persons(files, rows, panel, lambda n: n.endswith("/train.json")))
  for side in ("train", "test"):
    individual = files[f"task4/individual/{side}.json"]
    for g in files[f"task4/group/{side}.json"]:
      assert g["n"] == sum(1 for r in individual if r["question_id"] == g["question_id"]
                           and all(r["profile"].get(k) == v for k, v in g["group"].items())), (side, g["group"])


def _convert(tmp_path, split, **kw):
  table = F.survey_table()
  codebook, conversion = F.convert(tmp_path, split, table=table, **kw)
  check_leaks(codebook, conversion, table)
  return codebook, conversion, table


def test_respondent_kind_keeps_each_panel_person_on_one_side(tmp_path):
  _, conversion, _ = _convert(tmp_path, "{test_fraction: 0.25, seed: 3}")
  split = conversion.report["split"]
  assert split["persons"] == 100 and split["sides"]["test"]["persons"] == 25
  assert all("person_id" in r for r in conversion.files["task4/individual/test.json"])
  assert conversion.report["warnings"] == []


@pytest.mark.parametrize("split", ["{kinds: [question], questions: [q_city, q_arts]}",
                                   "{kinds: [question], question_fraction: 0.01, seed: 5}"])
def test_question_kind_keeps_held_out_questions_off_every_training_file(tmp_path, split):
  _, conversion, _ = _convert(tmp_path, split)
  held = conversion.report["split"]["held_out_questions"]
  assert held and len(held) < len(F.QUESTIONS)
  assert conversion.report["split"]["sides"]["test"]["questions"] == held
  # The same persons answer on both sides, to different questions.
  assert conversion.report["split"]["sides"]["train"]["persons"] == 100


def test_wave_kind_keeps_straddling_panel_persons_on_train_with_pre_cut_rows(tmp_path):
  _, conversion, table = _convert(tmp_path, "{kinds: [wave], wave: {from_year: 2008}}")
  years = table.groupby("pid")["year"]
  straddling = set(table["pid"][table["pid"].map((years.min() < 2008) & (years.max() >= 2008))])
  post_cut_rows = int(((table["year"] >= 2008) & table["pid"].isin(straddling)).sum())
  assert straddling and conversion.report["split"]["panel_rows_dropped_at_wave_cut"] == post_cut_rows
  test_persons = {r["person_id"] for r in conversion.files["task4/individual/test.json"]}
  assert test_persons == {str(p) for p in set(table["pid"][table["year"] >= 2008]) - straddling}
  assert conversion.report["split"]["sides"]["test"]["years"] == [2008, 2009, 2010]


def test_wave_years_without_a_panel_split_rows(tmp_path):
  _, conversion, table = _convert(tmp_path, "{kinds: [wave], wave: {years: [2003, 2009]}}", panel=False)
  assert conversion.report["split"]["sides"]["test"]["rows"] == int(table["year"].isin([2003, 2009]).sum())
  assert conversion.report["split"]["panel_rows_dropped_at_wave_cut"] == 0


def test_population_kind_moves_everyone_who_ever_held_the_value(tmp_path):
  _, conversion, table = _convert(tmp_path, "{kinds: [population], population: {field: region, values: [south]}}")
  sides = conversion.report["split"]["sides"]
  assert "south" not in sides["train"]["population_values"] and "south" in sides["test"]["population_values"]
  movers = {p for p in range(100) if p % 17 == 0}   # south at their last wave only, for some
  test_persons = {int(r["person_id"]) for r in conversion.files["task4/individual/test.json"]}
  assert movers <= test_persons and conversion.report["warnings"] == []


def test_respondent_and_question_exclude_the_mixed_cells(tmp_path):
  _, conversion, table = _convert(tmp_path, "{kinds: [respondent, question], questions: [q_parks]}")
  files = conversion.files
  test_persons = {r["person_id"] for r in files["task4/individual/test.json"]}
  answered = {c: table[c].isin([1, 2, 3]) | ((table[c] == 4) & (c == "q_space")) for c in F.QUESTIONS}
  is_test = table["pid"].astype(str).isin(test_persons)
  expected = sum(int((answered[c] & (is_test != (c == "q_parks"))).sum()) for c in F.QUESTIONS)
  assert conversion.report["split"]["cells_excluded_by_mixing_kinds"] == expected
  assert len(files["task4/individual/test.json"]) == int((answered["q_parks"] & is_test).sum())
  assert {r["question_id"] for r in files["task2/train.json"]} == set(F.QUESTIONS) - {"q_parks"}


def test_validation_persons_reach_no_train_file(tmp_path):
  _, conversion, _ = _convert(tmp_path, "{validation_fraction: 0.25, seed: 1}")
  files = conversion.files
  validation = {r["person_id"] for r in files["task4/individual/validation.json"]}
  assert validation and {r["person_id"] for r in files["task3/individual/validation.json"]} <= validation
  sides = conversion.report["split"]["sides"]
  assert sides["validation"]["persons"] == len(validation) == 20   # a quarter of 80 training persons
  assert conversion.report["records_per_file"]["foundation_quan/train.json"] == sides["train"]["cells"]


def test_context_answers_show_training_questions_only(tmp_path):
  codebook, conversion, _ = _convert(
      tmp_path, "{kinds: [respondent, question], questions: [q_roads], context_answers: 2, validation_fraction: 0.1}")
  files = conversion.files
  train = files["task4/individual/train.json"]
  assert train and sum(len(r["context"]) == 2 for r in train) > 0.8 * len(train)
  short = sum(1 for n in ("train", "validation", "test") for r in files[f"task4/individual/{n}.json"]
              if len(r["context"]) < 2)
  assert conversion.report["counts"].get("records_with_fewer_context_answers", 0) == short
  # Test records see the person's answers to training questions (cells in no file themselves).
  assert any(r["context"] for r in files["task4/individual/test.json"])
  heading = prompt_layouts.layout("survey_response", "en").get("context")
  assert heading and all(heading not in r["instruction"] for r in files["foundation_quan/train.json"])
  assert all("context" not in r for r in files["foundation_quan/train.json"])


def test_the_leak_checker_catches_planted_leaks(tmp_path):
  table = F.survey_table()
  codebook, conversion = F.convert(tmp_path, "{kinds: [respondent, question], questions: [q_city]}", table=table)
  test_record = conversion.files["task4/individual/test.json"][0]
  conversion.files["task2/train.json"].append(test_record)        # a held-out question in training
  with pytest.raises(AssertionError):
    check_leaks(codebook, conversion, table)
  conversion.files["task2/train.json"].pop()
  record = dict(conversion.files["task4/individual/train.json"][0])
  record["context"] = [{"question_id": record["question_id"], "question": "", "answer": ""}]
  conversion.files["task4/individual/train.json"][0] = record      # the target inside its context
  with pytest.raises(AssertionError):
    check_leaks(codebook, conversion, table)


@pytest.mark.parametrize("split", [
    "{kinds: [respondent, wave], wave: {from_year: 2006}, validation_fraction: 0.2}",
    "{kinds: [wave, question], wave: {from_year: 2008}, questions: [q_space], context_answers: 3}",
    "{kinds: [population, question], population: {field: region, values: [west]}, question_fraction: 0.4}",
    "{kinds: [profile, population], population: {field: region, values: [north]}, test_fraction: 0.5}",
])
def test_combined_kinds_keep_the_leak_rules(tmp_path, split):
  _, conversion, _ = _convert(tmp_path, split)
  assert conversion.files["task4/individual/train.json"]
