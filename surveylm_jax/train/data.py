"""Training data for a stage: records -> Grain pipeline -> global batches.

Every process runs the same deterministic pipeline and keeps its own rows of each global batch
(`local_rows`). The global batch stream is therefore identical whatever the number of
processes or devices, which is what makes a 2-process run log the same losses as a 1-process
run; survey corpora are small enough that tokenizing them on every host costs little.
"""
from __future__ import annotations

import sys
from typing import Dict, List, Tuple

import jax

from surveylm_jax.cli import ConfigError
from surveylm_jax.data import read_alignsurvey
from surveylm_jax.data.grain_pipeline import PipelineConfig, build_dataset, pipeline_counts
from surveylm_jax.data.packing import BATCH_KEYS, batch_shapes
from surveylm_jax.data.question_catalog import QuestionCatalog
from surveylm_jax.models.hf_io import TOKENIZER_FILES
from surveylm_jax.paths import local_copy


def read_records(paths: str, lenient: bool, max_records: int, tfds_dirs=("", ""),
                 allow_empty: bool = False) -> list:
  """Records of comma-separated sources; skips are reported, not hidden. A source is an AlignSurvey
  JSON/JSONL file or `tfds:alignsurvey/CONFIG:SPLIT` (the TFDS build of a manual-download folder;
  `tfds_dirs` = (data_dir, manual_dir), built on first use). A file holding no records is a
  DataError naming it unless `allow_empty` (config data.allow_empty) says empty files are meant."""
  records: list = []
  for path in [p.strip() for p in paths.split(",") if p.strip()]:
    if path.startswith("tfds:"):
      records.extend(_tfds_records(path, *tfds_dirs))
      continue
    part = read_alignsurvey(path, lenient=lenient, allow_empty=allow_empty)
    if part.report.total_skipped:
      print(part.report.summary(), file=sys.stderr, flush=True)
    records.extend(part)
  if max_records is not None and max_records >= 0:
    records = records[:max_records]
  return records


def _tfds_records(spec: str, data_dir: str, manual_dir: str) -> list:
  from surveylm_jax.data.sources import tfds_source
  name, sep, split = spec[len("tfds:"):].rpartition(":")
  if not sep or not name.startswith("alignsurvey/"):
    raise ValueError(f"{spec!r}: expected tfds:alignsurvey/CONFIG:SPLIT, e.g. "
                     "tfds:alignsurvey/task4_individual:train")
  source = tfds_source(name, split, data_dir=data_dir or None, manual_dir=manual_dir or None)
  return [source[i] for i in range(len(source))]


class TrainData:
  def __init__(self, config):
    import transformers
    self.config = config
    self.tokenizer_path = config.model.tokenizer or config.model.path
    # transformers reads local folders only: a gs:// one is fetched (tokenizer files only)
    with local_copy(self.tokenizer_path, names=TOKENIZER_FILES) as tokenizer_dir:
      self.tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    if not config.data.train:
      raise ConfigError("config.data.train is empty: name the AlignSurvey training file(s)")
    tfds_dirs = (config.data.tfds_data_dir, config.data.tfds_manual_dir)
    # .get: configs written before data.allow_empty existed keep the strict default.
    allow_empty = bool(config.data.get("allow_empty", False))
    self.train_records = read_records(config.data.train, config.data.lenient,
                                      config.data.max_records, tfds_dirs, allow_empty)
    if not self.train_records:
      raise ConfigError(f"{config.data.train}: no training records")
    self.eval_records = (read_records(config.data.eval, config.data.lenient, config.eval.max_records,
                                      tfds_dirs, allow_empty) if config.data.eval else [])
    self.global_batch = int(config.data.batch_size)
    if self.global_batch % jax.process_count():
      raise ValueError(f"data.batch_size={self.global_batch} is not divisible by the "
                       f"{jax.process_count()} processes")
    self.seq_len = int(config.data.seq_len)
    # Canonical option orders for the option losses (user file, converter catalog beside the data,
    # shipped catalog, known scales); see data/question_catalog.py.
    files = [p.strip() for p in f"{config.data.train},{config.data.eval}".split(",")
             if p.strip() and not p.strip().startswith("tfds:")]
    self.question_catalog = QuestionCatalog.for_data(files, config.data.question_catalog)
    self._eval_cache: List[dict] = []
    self._check_one_batch_fills()
    self.total_steps = self._total_steps()

  def _pipeline(self, *, shuffle: bool, epochs, shuffle_options: bool) -> PipelineConfig:
    return PipelineConfig(seq_len=self.seq_len, batch_size=self.global_batch,
                          seed=int(self.config.seed), shuffle=shuffle, num_epochs=epochs,
                          pack=bool(self.config.data.pack), shuffle_options=shuffle_options,
                          share_prefixes=bool(self.config.data.share_prefixes),
                          max_group_members=int(self.config.data.max_group_members),
                          group_answers=str(self.config.data.group_answers),
                          question_catalog=self.question_catalog,
                          process_index=0, process_count=1, drop_remainder=True)

  def _check_one_batch_fills(self) -> None:
    """One global batch out of one unshuffled pass, or a ConfigError saying why not. Without this
    check a run by `train.steps` whose every record is dropped (prompt longer than data.seq_len)
    would loop over the data forever, waiting for a first batch."""
    it = iter(build_dataset(self.train_records, self.tokenizer,
                            self._pipeline(shuffle=False, epochs=1, shuffle_options=False)))
    try:
      next(it)
    except StopIteration:
      raise ConfigError(self._no_batch_message(pipeline_counts(it))) from None

  def _no_batch_message(self, counts: dict) -> str:
    kept, dropped = counts.get("examples", 0), counts.get("dropped", 0)
    return (f"{self.config.data.train}: the training data fill no batch of {self.global_batch} rows x "
            f"{self.seq_len} tokens: {len(self.train_records)} records, {dropped} dropped as longer than "
            f"data.seq_len={self.seq_len} even with their profile cut, {kept} kept -> "
            f"{counts.get('rows', 0)} rows; raise data.seq_len or lower data.batch_size")

  def _total_steps(self) -> int:
    epochs = int(self.config.train.epochs)
    if epochs <= 0:
      return int(self.config.train.steps)
    if int(self.config.train.cache_lower_layers) > 0:
      # Passes over the cached batches (train/lower_cache.py), not over the whole data.
      return epochs * int(self.config.train.cache_lower_layers)
    it = iter(build_dataset(self.train_records, self.tokenizer,
                            self._pipeline(shuffle=True, epochs=1, shuffle_options=False)))
    per_epoch = sum(1 for _ in it)
    counts = pipeline_counts(it)
    print(f"data: {len(self.train_records)} records -> {per_epoch} batches of "
          f"{self.global_batch}x{self.seq_len} per epoch; packer counts {counts}",
          file=sys.stderr, flush=True)
    if per_epoch == 0:
      raise ConfigError(self._no_batch_message(counts))
    return epochs * per_epoch

  def train_iterator(self):
    """Endless seeded stream of global batches (epochs re-shuffle); state saveable by orbax."""
    return iter(build_dataset(self.train_records, self.tokenizer, self._pipeline(
        shuffle=True, epochs=None, shuffle_options=bool(self.config.data.shuffle_options))))

  def eval_batches(self, limit: int) -> List[dict]:
    if not self.eval_records or limit <= 0:
      return []
    if not self._eval_cache:
      it = iter(build_dataset(self.eval_records, self.tokenizer,
                              self._pipeline(shuffle=False, epochs=1, shuffle_options=False)))
      for batch in it:
        self._eval_cache.append(batch)
        if len(self._eval_cache) >= limit:
          break
    return self._eval_cache[:limit]

  @property
  def batch_shapes(self) -> Dict[str, Tuple[int, ...]]:
    return batch_shapes(self.global_batch, self.seq_len)

  def local_rows(self, batch: dict) -> dict:
    """This process's contiguous slice of the global batch's rows."""
    n = jax.process_count()
    size = self.global_batch // n
    start = jax.process_index() * size
    return {k: v[start:start + size] for k, v in batch.items() if k in BATCH_KEYS}
