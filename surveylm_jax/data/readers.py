"""`read_alignsurvey`: an AlignSurvey JSON / JSONL file -> typed records that know their task."""
from __future__ import annotations

import logging
import os

from surveylm_jax import paths
from surveylm_jax.data.errors import DataError, ReadReport
from surveylm_jax.data.json_io import load_raw_records
from surveylm_jax.data.prompt_parsing import PromptError
from surveylm_jax.data.task_parsers import empty_notes, parser_for, task_from_content, task_from_path


class RecordList(list):
  """The records of one file, with the `report` of what was kept, skipped and repaired."""

  def __init__(self, records, report: ReadReport):
    super().__init__(records)
    self.report = report


def read_alignsurvey(path: str | os.PathLike, lenient: bool = False, task: str | None = None,
                     allow_empty: bool = False) -> RecordList:
  """Reads one AlignSurvey file into typed records.

  Args:
    path: a .json array or .jsonl file in AlignSurvey's Alpaca layout.
    lenient: False (default) raises DataError at the first bad record, naming file, record, line
      and field. True repairs trailing commas, skips bad records and counts every skip by reason
      in `result.report` (also logged as a summary).
    task: one of task_parsers.PARSERS; by default taken from the path ('task4/group/...') or,
      when the path names no task, from the first record's layout.
    allow_empty: False (default) raises DataError when the file holds no records at all (an empty
      array, an empty or blank file), which would otherwise train or evaluate on nothing. True
      returns an empty list, for a file that is empty on purpose.
  """
  path = os.fspath(path)
  if not paths.as_path(path).is_file():   # local or gs://
    raise DataError("no such file", path=path, reason="missing_file")
  report = ReadReport(path)
  raws = load_raw_records(path, lenient, report)
  if not raws and not report.total_skipped and not allow_empty:
    # Lenient reads whose every line was broken are not "empty": their report says why.
    raise DataError("the file holds no records (an empty array or file); pass allow_empty=True "
                    "(config data.allow_empty) if that is meant", path=path, reason="empty_file")
  task = task or task_from_path(path)
  if task is None and raws:
    task = task_from_content(raws[0])
    if task is None:
      raise DataError("cannot tell which AlignSurvey task this file holds; pass task=...", path=path,
                      record=0, line=raws[0].line, reason="unknown_task")
  report.task = task
  parse = parser_for(task) if task else None
  records, notes = [], empty_notes()
  for raw in raws:
    try:
      records.append(parse(raw, notes))
    except PromptError as e:
      error = DataError(str(e), path=path, record=raw.index, line=raw.line, field=e.field, reason=e.reason)
      if not lenient:
        raise error from None
      report.skip(error)
  report.kept = len(records)
  report.notes.update(notes)
  if lenient and (report.total_skipped or report.repaired):
    logging.warning("%s", report.summary())
  return RecordList(records, report)
