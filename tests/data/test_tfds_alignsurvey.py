"""TFDS builder: a manual folder of AlignSurvey JSON -> ArrayRecord, read back without TensorFlow."""
import os
import shutil

import pytest

from surveylm_jax import data
from surveylm_jax.data import grain_pipeline as gp
from surveylm_jax.data.sources import InMemorySource, tfds_source

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def test_tfds_array_record_source_equals_json_records(tmp_path, smollm2_tokenizer):
  manual = tmp_path / "manual"
  (manual / "task4" / "individual").mkdir(parents=True)
  (manual / "task4" / "group").mkdir(parents=True)
  shutil.copy(os.path.join(FIXTURES, "task4_mixed.json"), manual / "task4" / "individual" / "test.json")
  shutil.copy(os.path.join(FIXTURES, "task4_group.jsonl"), manual / "task4" / "group" / "train.jsonl")
  source = tfds_source("alignsurvey/task4_individual", "test", data_dir=str(tmp_path / "tfds"),
                       manual_dir=str(manual))
  direct = InMemorySource(str(manual / "task4" / "individual" / "test.json"))
  assert len(source) == len(direct) == 3
  from_tfds = sorted((source[i] for i in range(len(source))), key=lambda r: r.source.index)
  assert from_tfds == list(direct.records)
  assert any(f.endswith(".array_record-00000-of-00001") for _, _, fs in os.walk(tmp_path / "tfds") for f in fs)
  group = tfds_source("alignsurvey/task4_group", "train", data_dir=str(tmp_path / "tfds"), manual_dir=str(manual))
  assert sorted(r.distribution[0] for r in (group[i] for i in range(len(group)))) == [0.45, 0.5, 0.505]
  batches = list(gp.build_dataset(source, smollm2_tokenizer, gp.PipelineConfig(
      seq_len=1024, batch_size=1, process_index=0, process_count=1, drop_remainder=False)))
  assert sum(int(b["segment_ids"].max()) for b in batches) == 3
  assert isinstance(source[0], data.SurveyResponseRecord)


def test_training_reads_a_tfds_source_by_name(tmp_path):
  from surveylm_jax.train.data import read_records
  manual = tmp_path / "manual"
  (manual / "task4" / "individual").mkdir(parents=True)
  shutil.copy(os.path.join(FIXTURES, "task4_mixed.json"), manual / "task4" / "individual" / "train.json")
  got = read_records("tfds:alignsurvey/task4_individual:train", False, -1,
                     (str(tmp_path / "tfds"), str(manual)))
  direct = data.read_alignsurvey(manual / "task4" / "individual" / "train.json")
  assert sorted(got, key=lambda r: r.source.index) == list(direct)
  with pytest.raises(ValueError, match="expected tfds:alignsurvey/CONFIG:SPLIT"):
    read_records("tfds:task4_individual", False, -1, ("", ""))
