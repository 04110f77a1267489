"""Stata and SPSS microdata sources convert to the same AlignSurvey files as the same table from CSV.

The files are written by pyreadstat with value labels on the coded columns, as survey archives ship
them; the converter must read codes (which the codebook maps), not the labels.
"""
import json
import os
import shutil

import pandas as pd
import pytest

from surveylm_jax.data import DataError
from surveylm_jax.data.codebook import load_codebook
from surveylm_jax.data.microdata import load_table
from surveylm_jax.data.survey_converter import convert_survey, write_conversion

pyreadstat = pytest.importorskip("pyreadstat")

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
CSV = os.path.join(FIXTURES, "survey_small.csv")
CODEBOOK = os.path.join(FIXTURES, "codebook_small_zh.yaml")
CSV_SOURCE = "source: {csv: survey_small.csv}"
# Labels as an archive would write them, including one for the missing code 9 and English text
# that differs from the codebook's option labels: only the codes may reach the converter.
VALUE_LABELS = {
    "gender": {1: "male", 2: "female"},
    "area": {1: "urban", 2: "rural"},
    "q_trust": {1: "trust", 2: "so-so", 3: "distrust", 9: "no answer"},
    "q_life": {1: "better", 2: "same", 3: "worse", 4: "don't know", 9: "no answer"},
}


def _codebook(tmp_path, source: str):
  text = open(CODEBOOK, encoding="utf-8").read()
  assert CSV_SOURCE in text
  path = tmp_path / f"codebook_{source.split(':')[0].strip('{')}.yaml"
  path.write_text(text.replace(CSV_SOURCE, f"source: {source}"), encoding="utf-8")
  return load_codebook(path)


def _written(conversion, out):
  """Every file the conversion writes, parsed: what a user gets on disk."""
  files = {}
  for path in write_conversion(conversion, str(out)) + [str(out / "conversion_report.json")]:
    with open(path, encoding="utf-8") as f:
      files[os.path.relpath(path, out)] = json.load(f)
  return files


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
  """Codebooks for the same table as CSV, Stata (.dta) and SPSS (.sav), each beside its data."""
  tmp = tmp_path_factory.mktemp("sources")
  table = pd.read_csv(CSV)
  shutil.copy(CSV, tmp / "survey_small.csv")
  pyreadstat.write_dta(table, str(tmp / "small.dta"), variable_value_labels=VALUE_LABELS)
  pyreadstat.write_sav(table, str(tmp / "small.sav"), variable_value_labels=VALUE_LABELS)
  return {"csv": _codebook(tmp, "{csv: survey_small.csv}"), "stata": _codebook(tmp, "{stata: small.dta}"),
          "spss": _codebook(tmp, "{spss: small.sav}")}


def test_labelled_stata_and_spss_files_hold_value_labels(sources):
  # The fixtures really carry labels, so the test below exercises reading codes past them.
  _, stata = pyreadstat.read_dta(sources["stata"].resolve("small.dta"), metadataonly=True)
  _, spss = pyreadstat.read_sav(sources["spss"].resolve("small.sav"), metadataonly=True)
  for meta in (stata, spss):
    assert meta.variable_value_labels["q_trust"][1] == "trust"


@pytest.mark.parametrize("kind", ["stata", "spss"])
def test_stata_and_spss_tables_hold_the_csv_codes(sources, kind):
  csv, other = load_table(sources["csv"]), load_table(sources[kind])
  assert list(other.columns) == list(csv.columns)
  for column in VALUE_LABELS:
    assert pd.api.types.is_numeric_dtype(other[column]), f"{kind} {column}: labels instead of codes"
  pd.testing.assert_frame_equal(other, csv, check_dtype=False)


@pytest.mark.parametrize("kind", ["stata", "spss"])
def test_stata_and_spss_convert_to_the_same_files_as_csv(sources, kind, tmp_path):
  expected = _written(convert_survey(sources["csv"]), tmp_path / "csv")
  got = _written(convert_survey(sources[kind]), tmp_path / kind)
  assert set(got) == set(expected)
  for name in sorted(expected):
    if name == "conversion_report.json":  # names its own codebook; everything else must match
      assert got[name]["codebook"] == sources[kind].path
      got[name]["codebook"] = expected[name]["codebook"]
    assert len(got[name]) == len(expected[name]), name
    if isinstance(expected[name], list):
      for i, (g, e) in enumerate(zip(got[name], expected[name])):
        assert g == e, f"{kind} {name} record {i} differs from the CSV conversion"
    assert got[name] == expected[name], name
  assert expected["task4/individual/train.json"] and expected["task4/group/test.json"]


@pytest.mark.parametrize("kind,name", [("csv", "gone.csv"), ("stata", "gone.dta"), ("spss", "gone.sav")])
def test_missing_source_file_is_an_error_naming_it(tmp_path, kind, name):
  codebook = _codebook(tmp_path, f"{{{kind}: {name}}}")
  with pytest.raises(DataError, match="does not exist") as info:
    load_table(codebook)
  assert str(tmp_path / name) in str(info.value) and info.value.field == "source"
  assert info.value.path == codebook.path


@pytest.mark.parametrize("kind,name", [("stata", "broken.dta"), ("spss", "broken.sav")])
def test_damaged_source_file_is_an_error_naming_it(tmp_path, kind, name):
  (tmp_path / name).write_text("not a data file", encoding="utf-8")
  codebook = _codebook(tmp_path, f"{{{kind}: {name}}}")
  with pytest.raises(DataError, match=f"cannot read {kind} source file {tmp_path / name}"):
    load_table(codebook)
