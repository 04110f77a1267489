"""Random-access record sources for the Grain pipeline: in memory, or TFDS ArrayRecord files."""
from __future__ import annotations

import json
import os

from surveylm_jax.data.json_io import RawRecord
from surveylm_jax.data.readers import read_alignsurvey
from surveylm_jax.data.task_parsers import empty_notes, parser_for


class InMemorySource:
  """All records of some AlignSurvey files, held in memory (small files, tests, evaluation)."""

  def __init__(self, paths, lenient: bool = False, allow_empty: bool = False):
    # One path (a str, or an epath / pathlib path: local or gs://) or several.
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    self.records, self.reports = [], []
    for path in paths:
      records = read_alignsurvey(path, lenient=lenient, allow_empty=allow_empty)
      self.records.extend(records)
      self.reports.append(records.report)

  def __len__(self):
    return len(self.records)

  def __getitem__(self, index):
    return self.records[index]


class TfdsRecordSource:
  """Typed records from a TFDS AlignSurvey data source (ArrayRecord; random access, no TensorFlow).

  Rows store the raw record as JSON plus where it came from; each access re-parses it with the
  task's parser, so records read through TFDS equal those read from the JSON files.
  """

  def __init__(self, data_source, task: str):
    self._source, self.task = data_source, task
    self._parse = parser_for(task)

  def __len__(self):
    return len(self._source)

  def __getitem__(self, index):
    row = self._source[index]
    text = lambda v: v.decode("utf-8") if isinstance(v, bytes) else str(v)
    raw = RawRecord(text(row["source_path"]), int(row["source_index"]), int(row["source_line"]),
                    json.loads(text(row["fields_json"])))
    return self._parse(raw, empty_notes())


def tfds_source(name_and_config: str, split: str, data_dir: str | None = None,
                manual_dir: str | None = None) -> TfdsRecordSource:
  """E.g. tfds_source('alignsurvey/task4_individual', 'train', data_dir, manual_dir): builds the
  dataset from the manual folder if needed, then reads it as ArrayRecord."""
  import tensorflow_datasets as tfds

  from surveylm_jax.data import tfds_alignsurvey

  name, config = name_and_config.split("/")
  builder = tfds_alignsurvey.AlignSurvey(config=config, data_dir=data_dir, file_format="array_record")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return TfdsRecordSource(builder.as_data_source(split=split), builder.builder_config.task)
