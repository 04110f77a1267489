"""Question catalog: precedence of the sources, scale inference in Chinese and English, the
converter's codebook catalog, and clear errors for bad catalog files."""
import os

import numpy as np
import pytest

from surveylm_jax.data import DataError, known_scales
from surveylm_jax.data.codebook import load_codebook
from surveylm_jax.data.question_catalog import (CATALOG_FILENAME, QuestionCatalog, codebook_catalogs,
                                                write_catalog_file)
from surveylm_jax.data.survey_converter import convert_survey, write_conversion

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
HAPPY = "考虑到生活的各个方面，您觉得幸福吗？"


@pytest.mark.parametrize("listed, expected, scale", [
    (["一般", "幸福", "不幸福"], ["不幸福", "一般", "幸福"], "happiness"),
    (["满意", "不满意", "一般"], ["不满意", "一般", "满意"], "satisfaction"),
    (["持平", "高", "低"], ["低", "持平", "高"], "level"),
    (["扩大", "缩小", "没什么变化"], ["缩小", "没什么变化", "扩大"], "gap"),
    (["上升了", "差不多", "下降了"], ["下降了", "差不多", "上升了"], "change"),
    (["Strongly agree", "Disagree", "Agree", "Strongly disagree"],
     ["Strongly disagree", "Disagree", "Agree", "Strongly agree"], "agreement"),
    (["sometimes", "never", "always", "often"], ["never", "sometimes", "often", "always"], "frequency"),
    (["too much", "too little", "about right"], ["too little", "about right", "too much"], "amount"),
    (["A great deal", "Only some", "Hardly any"], None, None),   # not a scale the project knows
    (["消极", "积极", "中立"], ["积极", "中立", "消极"], "stance"),
])
def test_known_scales_order_chinese_and_english(listed, expected, scale):
  got = known_scales.infer_scale(listed)
  if expected is None:
    assert got is None
    return
  name, idx = got
  assert name == scale and [listed[i] for i in idx] == expected


def test_shipped_catalog_covers_the_chip_questions_in_every_listed_order():
  catalog = QuestionCatalog()
  orders = {catalog.resolve(None, HAPPY, perm).options
            for perm in (["一般", "幸福", "不幸福"], ["不幸福", "一般", "幸福"], ["幸福", "不幸福", "一般"])}
  assert orders == {("不幸福", "一般", "幸福")}
  order = catalog.resolve(None, HAPPY, ["幸福", "不幸福", "一般"])
  assert order.source == "shipped" and order.ordinal
  np.testing.assert_array_equal(order.permutation(["幸福", "不幸福", "一般"]), [1, 2, 0])


def _user_catalog(tmp_path, body: str) -> str:
  path = tmp_path / "catalog.yaml"
  path.write_text(body, encoding="utf-8")
  return str(path)


def test_precedence_user_then_codebook_then_shipped_then_inferred_then_nominal(tmp_path):
  codebook = tmp_path / "survey" / CATALOG_FILENAME
  write_catalog_file(str(codebook), [{"id": "q1", "text": "Q one?", "options": ["b", "a", "c"]},
                                     {"text": HAPPY, "options": ["幸福", "一般", "不幸福"]}])
  data = tmp_path / "survey" / "task4" / "individual" / "test.json"
  assert codebook_catalogs([str(data)]) == [str(codebook)]
  user = _user_catalog(tmp_path, "questions:\n  - id: q1\n    options: [c, b, a]\n")
  catalog = QuestionCatalog.for_data([str(data)], user)
  assert catalog.resolve("q1", "Q one?", ["a", "b", "c"]).options == ("c", "b", "a")       # user
  assert catalog.resolve("q1", "Q one?", ["a", "b", "c"]).source == "user"
  assert catalog.resolve(None, HAPPY, ["一般", "幸福", "不幸福"]).options == ("幸福", "一般", "不幸福")  # codebook
  assert catalog.resolve(None, "您对医疗服务满意吗？", ["满意", "一般", "不满意"]).source == "inferred"
  nominal = catalog.resolve(None, "Favourite colour?", ["red", "blue", "green"])
  assert not nominal.ordinal and nominal.options == ("blue", "green", "red")
  report = catalog.report()
  assert report["by_source"] == {"stance": 0, "user": 1, "codebook": 1, "shipped": 0, "inferred": 1,
                                 "nominal": 1}
  assert report["inferred"][0]["scale"] == "satisfaction"
  assert report["nominal"][0]["question"] == "Favourite colour?"


def test_user_entry_can_declare_a_question_nominal(tmp_path):
  user = _user_catalog(tmp_path, "questions:\n  - text: Q?\n    options: [too little, about right, too much]\n"
                                 "    ordinal: false\n")
  order = QuestionCatalog([user]).resolve(None, "Q?", ["too much", "too little", "about right"])
  assert order.source == "user" and not order.ordinal


@pytest.mark.parametrize("body, field, words", [
    ("questions: 3\n", "questions", "must hold 'questions:'"),
    ("questions:\n  - options: [a, b]\n", "questions[0]", "needs an 'id' or a 'text'"),
    ("questions:\n  - id: q\n    options: [a]\n", "questions[0].options", "at least two"),
    ("questions:\n  - id: q\n    options: [a, A]\n", "questions[0].options", "repeats"),
    ("questions:\n  - id: q\n    options: [a, b]\n    ordinal: maybe\n", "questions[0].ordinal", "true or false"),
    ("questions: [\n", None, "not valid YAML"),
])
def test_bad_catalog_files_name_file_and_field(tmp_path, body, field, words):
  path = _user_catalog(tmp_path, body)
  with pytest.raises(DataError) as e:
    QuestionCatalog([path])
  assert path in str(e.value) and words in str(e.value)
  if field:
    assert repr(field) in str(e.value)


def test_catalog_options_that_differ_from_the_record_name_the_entry(tmp_path):
  path = _user_catalog(tmp_path, "questions:\n  - id: q1\n    options: [a, b, c]\n")
  with pytest.raises(DataError, match=r"catalog.yaml.*questions\[0\].*'d'"):
    QuestionCatalog([path]).resolve("q1", "", ["a", "b", "d"], where="test.json: record 3")


def test_missing_user_catalog_is_a_clear_error(tmp_path):
  with pytest.raises(DataError, match="question catalog not found"):
    QuestionCatalog([str(tmp_path / "nope.yaml")])


def test_converter_writes_the_codebook_orders_beside_its_files(tmp_path):
  codebook = load_codebook(os.path.join(FIXTURES, "codebook_small_zh.yaml"))
  write_conversion(convert_survey(codebook), str(tmp_path))
  files = codebook_catalogs([str(tmp_path / "task4" / "group" / "test.json")])
  assert files == [str(tmp_path / CATALOG_FILENAME)]
  catalog = QuestionCatalog(codebook_files=files)
  for q in codebook.questions:
    shuffled = list(q.labels)[::-1]
    order = catalog.resolve(q.column, q.text, shuffled)
    assert order.source == "codebook" and order.options == q.labels
