"""TFDS builder for AlignSurvey: a manual-download folder of AlignSurvey JSON -> ArrayRecord.

Works without TensorFlow (ArrayRecord writing and `as_data_source` need none). The manual folder
uses AlignSurvey's / the converter's layout; each config reads one task and level:

    <manual_dir>/task4/individual/{train,test}.json[l]   config task4_individual
    <manual_dir>/task4/group/...                          config task4_group
    <manual_dir>/task3/individual/..., task3/group/...    task3_individual, task3_group
    <manual_dir>/task1/..., task2/...                      task1, task2
    <manual_dir>/foundation_quan/train.json, foundation_qual/train.json

Each file becomes the split named by its stem. Records are validated by `read_alignsurvey`
(strict: a bad record stops the build with file, record and field) and stored as their raw JSON,
so `sources.TfdsRecordSource` turns rows back into the same typed records.
"""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from surveylm_jax.data.readers import read_alignsurvey


@dataclasses.dataclass
class AlignSurveyConfig(tfds.core.BuilderConfig):
  task: str = ""          # parser name (task_parsers.PARSERS)
  subdir: str = ""        # folder under the manual dir


_CONFIGS = [
    AlignSurveyConfig(name="task4_individual", task="task4", subdir="task4/individual"),
    AlignSurveyConfig(name="task4_group", task="task4_group", subdir="task4/group"),
    AlignSurveyConfig(name="task3_individual", task="task3", subdir="task3/individual"),
    AlignSurveyConfig(name="task3_group", task="task3_group", subdir="task3/group"),
    AlignSurveyConfig(name="task2", task="task2", subdir="task2"),
    AlignSurveyConfig(name="task1", task="task1", subdir="task1"),
    AlignSurveyConfig(name="foundation_quan", task="foundation_quan", subdir="foundation_quan"),
    AlignSurveyConfig(name="foundation_qual", task="foundation_qual", subdir="foundation_qual"),
]


class AlignSurvey(tfds.core.GeneratorBasedBuilder):
  """AlignSurvey task files (Alpaca JSON) with their raw fields kept for typed re-parsing."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = _CONFIGS
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Put AlignSurvey JSON/JSONL files in the manual dir in the layout task4/individual/train.json, "
      "task4/group/test.json, task1/train.json, foundation_quan/train.json, ... (the output folder of "
      "`python -m tools.survey_to_alignsurvey` has this layout).")

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS's default looks the module up through `importlib_resources`, which the TF-free install
    # here lacks; this file is where the builder lives, which is all TFDS wants to know.
    return epath.Path(__file__)

  def _info(self):
    text = tfds.features.Text()
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "instruction": text, "input": text, "output": text, "task": text, "fields_json": text,
        "source_path": text, "source_index": np.int64, "source_line": np.int64}))

  def _split_generators(self, dl_manager):
    # dl_manager.manual_dir is an epath Path: the manual folder may sit on gs://.
    folder = epath.Path(dl_manager.manual_dir) / self.builder_config.subdir
    files = sorted(os.fspath(p) for pattern in ("*.json", "*.jsonl") for p in folder.glob(pattern))
    if not files:
      raise FileNotFoundError(f"no .json/.jsonl files in {folder}. {self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    splits = {}
    for path in files:
      split = epath.Path(path).name.split(".")[0]
      if split in splits:
        raise ValueError(f"two files for split {split!r} in {folder}")
      splits[split] = self._generate_examples(path)
    return splits

  def _generate_examples(self, path):
    for record in read_alignsurvey(path, task=self.builder_config.task):
      key = f"{record.source.index:09d}"
      yield key, {"instruction": record.instruction, "input": record.input, "output": record.output,
                  "task": self.builder_config.task,
                  "fields_json": json.dumps(record.to_alpaca(), ensure_ascii=False),
                  "source_path": record.source.path, "source_index": record.source.index,
                  "source_line": record.source.line or 0}
