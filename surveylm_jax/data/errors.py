"""Errors and read reports for AlignSurvey data.

Every failure names the file, the record (0-based index, plus the line it starts on when known)
and the field, so a researcher can open the file and fix it. Lenient reads never drop a record
silently: each skip is counted by reason in a `ReadReport`.
"""
from __future__ import annotations

import collections
import dataclasses


class DataError(ValueError):
  """A data file or record that cannot be read as declared."""

  def __init__(self, message: str, *, path: str | None = None, record: int | None = None,
               line: int | None = None, column: int | None = None, field: str | None = None,
               reason: str = "invalid"):
    self.path, self.record, self.line, self.column = path, record, line, column
    self.field, self.reason, self.detail = field, reason, message
    where = []
    if path is not None:
      where.append(str(path))
    if record is not None:
      where.append(f"record {record}")
    if line is not None:
      where.append(f"line {line}" + (f", column {column}" if column is not None else ""))
    if field is not None:
      where.append(f"field {field!r}")
    super().__init__(f"{': '.join(where)}: {message}" if where else message)


@dataclasses.dataclass
class ReadReport:
  """What happened while reading one file: kept records, skips by reason, repairs, notes."""
  path: str
  task: str | None = None
  kept: int = 0
  skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  repaired: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  notes: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  first_errors: list = dataclasses.field(default_factory=list)

  def skip(self, error: DataError, keep_examples: int = 5):
    self.skipped[error.reason] += 1
    if len(self.first_errors) < keep_examples:
      self.first_errors.append(str(error))

  @property
  def total_skipped(self) -> int:
    return sum(self.skipped.values())

  def summary(self) -> str:
    parts = [f"{self.path}: task {self.task}, kept {self.kept}, skipped {self.total_skipped}"]
    if self.skipped:
      parts.append("skipped by reason: " + ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items())))
    if self.repaired:
      parts.append("repaired: " + ", ".join(f"{k}={v}" for k, v in sorted(self.repaired.items())))
    if self.notes:
      parts.append("notes: " + ", ".join(f"{k}={v}" for k, v in sorted(self.notes.items())))
    return "; ".join(parts)
