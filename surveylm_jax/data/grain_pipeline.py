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
With `share_prefixes`, records that share a prompt prefix (one respondent's background) are
shuffled, sharded and packed as groups, the prefix once per row (`prefix_packing`).
"""
from __future__ import annotations

import dataclasses

import grain
import numpy as np

from surveylm_jax.data.chat_format import ChatTemplateTokenizer
from surveylm_jax.data.option_shuffle import shuffle_options
from surveylm_jax.data.packing import PackedIterDataset
from surveylm_jax.data.prefix_packing import GroupTokenizer, PrefixPackedIterDataset, group_by_prefix


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  seq_len: int = 1024
  batch_size: int = 8
  seed: int = 0
  shuffle: bool = True                 # seeded shuffle of the record order
  num_epochs: int | None = 1           # None: repeat forever
  pack: bool = True                    # False: one example per row
  num_packing_rows: int = 16           # open rows first-fit chooses among
  share_prefixes: bool = False         # pack a shared background once per row (prefix_packing)
  max_group_members: int = 0           # > 0: split prefix groups into chunks of at most this many
                                       # records (more respondents per batch, more prefix repeats)
  shuffle_options: bool = False        # seeded option-order augmentation (training only)
  group_answers: str = "text"          # group records: "text" (token loss) | "distribution" (soft slot)
  question_catalog: object = None      # QuestionCatalog: answer slots in canonical option order
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


def _ordered(items, config: PipelineConfig) -> grain.MapDataset:
  """This process's share of `items`, in the seeded order, repeated as configured."""
  index, count = _process(config)
  ds = grain.MapDataset.source(items)
  if config.shuffle:
    ds = ds.shuffle(seed=config.seed)
  ds = ds[index::count]
  if config.num_epochs != 1:
    ds = ds.repeat(config.num_epochs)
  return ds


def record_dataset(records, config: PipelineConfig) -> grain.MapDataset:
  """This process's records, in the seeded order, repeated and option-shuffled as configured."""
  ds = _ordered(records, config)
  if config.shuffle_options:
    ds = ds.random_map(_ShuffleOptions(), seed=config.seed + 1)
  return ds


class _ShuffleGroupOptions(grain.transforms.RandomMap):
  def random_map(self, group, rng: np.random.Generator):
    return [shuffle_options(record, rng) for record in group]


def _chunks(items: list, size: int) -> list:
  return [[int(i) for i in items[k:k + size]] for k in range(0, len(items), size)]


def group_dataset(records, config: PipelineConfig) -> grain.MapDataset:
  """Like `record_dataset` over groups of records that share a prompt prefix (reads every record
  once to find the groups): this process's groups, in the seeded order, each a list of records."""
  groups = group_by_prefix(records)
  if config.max_group_members > 0:
    rng = np.random.default_rng(config.seed)
    groups = [chunk for g in groups
              for chunk in _chunks(list(rng.permutation(g)) if config.shuffle else g,
                                   config.max_group_members)]
  ds = _ordered(groups, config).map(lambda indices: [records[i] for i in indices])
  if config.shuffle_options:
    ds = ds.random_map(_ShuffleGroupOptions(), seed=config.seed + 1)
  return ds


def build_dataset(records, tokenizer, config: PipelineConfig) -> grain.IterDataset:
  if config.share_prefixes:
    if not config.pack:
      raise ValueError("share_prefixes packs a group's questions after one prefix; it needs pack=True")
    groups = group_dataset(records, config).map(
        GroupTokenizer(tokenizer, config.seq_len, config.group_answers, config.question_catalog))
    return PrefixPackedIterDataset(groups, config.seq_len).batch(
        config.batch_size, drop_remainder=config.drop_remainder)
  examples = record_dataset(records, config).map(
      ChatTemplateTokenizer(tokenizer, config.seq_len, config.group_answers, config.question_catalog))
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
