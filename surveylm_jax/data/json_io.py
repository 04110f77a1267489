"""Loading AlignSurvey JSON (one array) and JSONL (one object a line) with exact error places.

Released files are messy (two of the published samples end in a trailing comma), so the array
is walked element by element: every record knows the line it starts on, and a syntax error is
reported with the line and column where it occurs. Lenient mode repairs trailing commas (and only
those) and counts each repair in the report.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os

from surveylm_jax import paths
from surveylm_jax.data.errors import DataError, ReadReport

_WHITESPACE = " \t\n\r"
_DECODER = json.JSONDecoder()


@dataclasses.dataclass(frozen=True)
class RawRecord:
  """One JSON object as read from disk, with where it came from."""
  path: str
  index: int
  line: int
  fields: dict


def _line_col(text: str, pos: int) -> tuple[int, int]:
  line = text.count("\n", 0, pos) + 1
  return line, pos - (text.rfind("\n", 0, pos) + 1) + 1


def _skip_ws(text: str, pos: int) -> int:
  while pos < len(text) and text[pos] in _WHITESPACE:
    pos += 1
  return pos


def _syntax_error(path: str, text: str, pos: int, message: str) -> DataError:
  line, col = _line_col(text, pos)
  return DataError(f"invalid JSON: {message}", path=path, line=line, column=col,
                   reason="invalid_json")


def _decode_at(path: str, text: str, pos: int):
  try:
    return _DECODER.raw_decode(text, pos)
  except json.JSONDecodeError as e:
    raise _syntax_error(path, text, e.pos, e.msg) from None


def _iter_array(path: str, text: str):
  """Yields (start offset, value) for each element of a top-level JSON array."""
  pos = _skip_ws(text, 0)
  if pos >= len(text) or text[pos] != "[":
    raise _syntax_error(path, text, pos, "expected a JSON array '[' of records")
  pos = _skip_ws(text, pos + 1)
  if pos < len(text) and text[pos] == "]":
    end = pos + 1
  else:
    while True:
      start = pos
      value, pos = _decode_at(path, text, pos)
      yield start, value
      pos = _skip_ws(text, pos)
      if pos < len(text) and text[pos] == ",":
        comma = pos
        pos = _skip_ws(text, pos + 1)
        if pos < len(text) and text[pos] == "]":
          raise _syntax_error(path, text, comma, "trailing comma before ']'")
        continue
      if pos < len(text) and text[pos] == "]":
        end = pos + 1
        break
      raise _syntax_error(path, text, pos, "expected ',' or ']' after a record")
  end = _skip_ws(text, end)
  if end != len(text):
    raise _syntax_error(path, text, end, "extra data after the closing ']'")


def remove_trailing_commas(text: str) -> tuple[str, int]:
  """Drops commas that directly precede ']' or '}' outside strings; returns (text, count)."""
  out, count, in_string, escaped, i = [], 0, False, False, 0
  while i < len(text):
    ch = text[i]
    if in_string:
      out.append(ch)
      if escaped:
        escaped = False
      elif ch == "\\":
        escaped = True
      elif ch == '"':
        in_string = False
    elif ch == '"':
      in_string = True
      out.append(ch)
    elif ch == ",":
      nxt = _skip_ws(text, i + 1)
      if nxt < len(text) and text[nxt] in "]}":
        count += 1  # keep the whitespace so line numbers of later records do not move
      else:
        out.append(ch)
    else:
      out.append(ch)
    i += 1
  return "".join(out), count


class _LineCounter:
  """Line numbers of increasing offsets in one pass (counting from 0 each time is quadratic)."""

  def __init__(self, text: str):
    self.text, self.pos, self.line = text, 0, 1

  def __call__(self, pos: int) -> int:
    if pos < self.pos:
      self.pos, self.line = 0, 1
    self.line += self.text.count("\n", self.pos, pos)
    self.pos = pos
    return self.line


def _check_object(path: str, line: int, index: int, value) -> RawRecord:
  if not isinstance(value, dict):
    raise DataError(f"expected a JSON object, got {type(value).__name__}", path=path,
                    record=index, line=line, reason="not_an_object")
  return RawRecord(path, index, line, value)


def _load_array(path: str, text: str) -> list[RawRecord]:
  line_of = _LineCounter(text)
  return [_check_object(path, line_of(start), i, v) for i, (start, v) in enumerate(_iter_array(path, text))]


def _load_lines(path: str, text: str, lenient: bool, report: ReadReport) -> list[RawRecord]:
  records = []
  for line_no, line in enumerate(text.split("\n"), start=1):
    stripped = line.strip()
    if stripped:
      try:
        value = json.loads(stripped)
      except json.JSONDecodeError as e:
        col = e.colno + (len(line) - len(line.lstrip()))
        error = DataError(f"invalid JSON: {e.msg}", path=path, record=len(records) + report.total_skipped,
                          line=line_no, column=col, reason="invalid_json")
        if not lenient:
          raise error from None
        report.skip(error)
        continue
      records.append(_check_object(path, line_no, len(records) + report.total_skipped, value))
  return records


def load_raw_records(path: str | os.PathLike, lenient: bool, report: ReadReport) -> list[RawRecord]:
  """Reads `path` (.json array or .jsonl lines) into raw records.

  Strict: any syntax error raises DataError with line and column. Lenient: trailing commas are
  repaired (logged and counted in `report.repaired`); broken JSONL lines are skipped and counted.
  """
  path = os.fspath(path)
  try:
    text = paths.read_text(path)   # local or gs://
  except UnicodeDecodeError as e:
    raise DataError(f"not UTF-8 text ({e.reason} at byte {e.start})", path=path,
                    reason="not_utf8") from None
  if not text.strip():  # a blank file holds no records; the reader decides whether that is allowed
    return []
  if path.endswith(".jsonl"):
    return _load_lines(path, text, lenient, report)
  if text.lstrip().startswith("{"):  # JSON Lines saved under .json, as generation outputs often are
    return _load_lines(path, text, lenient, report)
  try:
    return _load_array(path, text)
  except DataError as error:
    if not lenient:
      raise
    repaired, count = remove_trailing_commas(text)
    if count == 0:
      raise
    logging.warning("%s; repaired %d trailing comma(s) in lenient mode", error, count)
    report.repaired["trailing_comma"] += count
    return _load_array(path, repaired)
