"""Grain input pipeline: records -> (shard, shuffle, option shuffle) -> chat-template tokens with a
loss mask -> first-fit packing -> fixed [batch, seq_len] int32 batches.

    ds = build_dataset(records, tokenizer, PipelineConfig(seq_len=1024, batch_size=8))
    it = iter(ds); batch = next(it)          # dict of np.int32 [8, 1024], keys packing.ROW_KEYS
    state = it.get_state(); ...; it.set_state(state)   # resumes at the same element

`records` is any random-access sequence of typed records: a list from `read_alignsurvey`, an
`InMemorySource`, or a TFDS ArrayRecord source (`sources.tfds_source`). Each process reads the
slice `[process_index::process_count]` of the shuffled-once order, so process shards are disjoint
and together cover the data; every process yields the same number of batches per epoch only when
the slices pack alike, so size steps by `drop_remainder` as usual. Batches are host-local; see
`surveylm_jax.sharding.shard_host_batch` to make them global arrays on a mesh. Batch keys and meaning: see `packing`.
"""
from __future__ import annotations

import dataclasses

import grain
import numpy as np

from surveylm_jax.data.chat_format import ChatTemplateTokenizer
from surveylm_jax.data.option_shuffle import shuffle_options
from surveylm_jax.data.packing import PackedIterDataset


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  seq_len: int = 1024
  batch_size: int = 8
  seed: int = 0
  shuffle: bool = True                 # seeded shuffle of the record order
  num_epochs: int | None = 1           # None: repeat forever
  pack: bool = True                    # False: one example per row
  num_packing_rows: int = 16           # open rows first-fit chooses among
  shuffle_options: bool = False        # seeded option-order augmentation (training only)
  process_index: int | None = None     # default: jax.process_index()
  process_count: int | None = None     # default: jax.process_count()
  drop_remainder: bool = True


def _process(config: PipelineConfig) -> tuple[int, int]:
  if config.process_index is not None and config.process_count is not None:
    index, count = config.process_index, config.process_count
  else:
    import jax
    index, count = jax.process_index(), jax.process_count()
  if not 0 <= index < count:
    raise ValueError(f"process_index {index} not in [0, {count})")
  return index, count


class _ShuffleOptions(grain.transforms.RandomMap):
  def random_map(self, record, rng: np.random.Generator):
    return shuffle_options(record, rng)


def record_dataset(records, config: PipelineConfig) -> grain.MapDataset:
  """This process's records, in the seeded order, repeated and option-shuffled as configured."""
  index, count = _process(config)
  ds = grain.MapDataset.source(records)
  if config.shuffle:
    ds = ds.shuffle(seed=config.seed)
  ds = ds[index::count]
  if config.num_epochs != 1:
    ds = ds.repeat(config.num_epochs)
  if config.shuffle_options:
    ds = ds.random_map(_ShuffleOptions(), seed=config.seed + 1)
  return ds


def build_dataset(records, tokenizer, config: PipelineConfig) -> grain.IterDataset:
  examples = record_dataset(records, config).map(ChatTemplateTokenizer(tokenizer, config.seq_len))
  if config.pack:
    rows = PackedIterDataset(examples, config.seq_len, config.num_packing_rows)
  else:
    rows = PackedIterDataset(examples, config.seq_len, num_rows=1, max_segments=1)
  return rows.batch(config.batch_size, drop_remainder=config.drop_remainder)


def pipeline_counts(iterator) -> dict:
  """Counts of the packer under a batch iterator: examples, truncated, dropped, rows, tokens, slots."""
  state = iterator.get_state()
  while "counts" not in state:
    state = state["parent"]
  return dict(state["counts"])
