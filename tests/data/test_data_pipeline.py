"""Grain pipeline: loss masks, truncation, packing (checked with the model), state, sharding."""
import os

import numpy as np
import pytest

from surveylm_jax import data
from surveylm_jax.data import grain_pipeline as gp
from tests.data.pipeline_checks import assert_resumes_at_the_same_element
from surveylm_jax.data.chat_format import ELLIPSIS, ChatTemplateTokenizer
from surveylm_jax.data.json_io import RawRecord
from surveylm_jax.data.task_parsers import parse_survey_response
from surveylm_jax.data.packing import ROW_KEYS, assemble_row

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def _fixture_records():
  records = []
  for name in ("task4_mixed.json", "task1.json", "task2.json", "task3.json", "foundation_qual.json"):
    records.extend(data.read_alignsurvey(os.path.join(FIXTURES, name)))
  records.extend(data.read_alignsurvey(os.path.join(FIXTURES, "task4_group.jsonl"), task="task4_group"))
  return records


def _many_records(n=60):
  """Distinct task 4 records (fixture records with option orders and ids varied)."""
  base = data.read_alignsurvey(os.path.join(FIXTURES, "task4_mixed.json"))
  out = []
  rng = np.random.default_rng(0)
  for i in range(n):
    record = data.shuffle_options(base[i % len(base)], rng)
    out.append(type(record)(**{**record.__dict__, "respondent_id": f"r{i}",
                               "instruction": record.instruction.replace("81", str(18 + i))}))
  return out


def test_loss_mask_covers_exactly_the_answer_and_eos(smollm2_tokenizer):
  encode = ChatTemplateTokenizer(smollm2_tokenizer, 4096)
  for record in _fixture_records():
    example = encode(record)
    ids, mask = example["input_ids"], example["loss_mask"]
    assert ids.dtype == np.int32 and mask.dtype == np.int32 and not example["truncated"]
    answer = smollm2_tokenizer.decode(ids[mask == 1])
    assert answer == record.output + smollm2_tokenizer.eos_token
    first = int(np.argmax(mask))
    assert mask[first:first + int(mask.sum())].all()  # one contiguous run, at the end of the turn
    assert smollm2_tokenizer.decode(ids[:first]).endswith("<|im_start|>assistant\n")


def test_truncation_cuts_background_keeps_question_options_answer(smollm2_tokenizer):
  record = data.read_alignsurvey(os.path.join(FIXTURES, "task4_mixed.json"))[0]
  start, end = record.cut_spans[0]
  long_background = record.instruction[:start] + "".join(
      f"其他信息{i}: 这是一段很长的背景描述\n" for i in range(60)) + record.instruction[start:]
  long_record = parse_survey_response(
      RawRecord("x.json", 0, 1, {**record.to_alpaca(), "instruction": long_background}), None)
  limit = len(ChatTemplateTokenizer(smollm2_tokenizer, 4096)(record)["input_ids"]) + 40
  example = ChatTemplateTokenizer(smollm2_tokenizer, limit)(long_record)
  assert example["truncated"] == 1 and len(example["input_ids"]) <= limit
  text = smollm2_tokenizer.decode(example["input_ids"])
  assert ELLIPSIS in text and "其他信息0" not in text
  for kept in ("问卷问题：", record.question, "A. 满意", "B. 一般", "C. 不满意", "B. 一般<|im_end|>"):
    assert kept in text
  assert ChatTemplateTokenizer(smollm2_tokenizer, 60)(long_record) is None  # cannot fit: dropped


def test_truncated_and_dropped_examples_are_counted(smollm2_tokenizer):
  records = _fixture_records()
  config = gp.PipelineConfig(seq_len=200, batch_size=1, shuffle=False, process_index=0, process_count=1,
                             drop_remainder=False)
  it = iter(gp.build_dataset(records, smollm2_tokenizer, config))
  rows = list(it)
  counts = gp.pipeline_counts(it)
  assert counts["examples"] + counts["dropped"] == len(records)
  assert counts["truncated"] > 0 and counts["dropped"] > 0  # task 2's long background is cut; task 1 cannot fit
  assert sum(int(r["segment_ids"].max()) for r in rows) == counts["examples"]


def _check_row(row, seq_len):
  seg, pos, ids, tgt = row["segment_ids"], row["position_ids"], row["input_ids"], row["targets"]
  assert all(row[k].shape == (seq_len,) and row[k].dtype == np.int32 for k in ROW_KEYS)
  used = int((seg > 0).sum())
  assert (seg[:used] > 0).all() and (seg[used:] == 0).all()
  assert (row["attention_mask"] == (seg > 0)).all()
  for s in range(1, int(seg.max()) + 1):
    where = np.flatnonzero(seg == s)
    assert (np.diff(where) == 1).all()
    assert (pos[where] == np.arange(len(where))).all()
    assert (tgt[where[:-1]] == ids[where[1:]]).all() and tgt[where[-1]] == 0
    assert row["loss_mask"][where[-1]] == 0  # never predict across a segment boundary
  return used


def test_packed_rows_keep_segments_apart(smollm2_tokenizer):
  records = _many_records()
  config = gp.PipelineConfig(seq_len=512, batch_size=2, seed=3, process_index=0, process_count=1)
  it = iter(gp.build_dataset(records, smollm2_tokenizer, config))
  batches = list(it)
  counts = gp.pipeline_counts(it)
  segments = 0
  for batch in batches:
    for b in range(2):
      row = {k: v[b] for k, v in batch.items()}
      _check_row(row, 512)
      segments += int(row["segment_ids"].max())
  assert segments <= counts["examples"]  # rows still open at the batch remainder are not emitted
  assert counts["tokens"] / counts["slots"] > 0.7


def test_packed_and_unpacked_logits_agree_per_segment(smollm2_tokenizer):
  import jax
  import jax.numpy as jnp

  from surveylm_jax import models
  cfg = models.config_from_hf_dict({
      "model_type": "llama", "vocab_size": 512, "hidden_size": 64,
      "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
      "max_position_embeddings": 1024, "rms_norm_eps": 1e-5, "rope_theta": 10000.0})
  model = models.Transformer(cfg)
  # Random weights from the abstract shapes: Flax's own init takes ~20 s on this CPU.
  leaves, treedef = jax.tree_util.tree_flatten(models.abstract_params(model))
  rng = np.random.default_rng(0)
  params = jax.tree_util.tree_unflatten(
      treedef, [jnp.asarray(rng.normal(0.0, 0.1, leaf.shape), leaf.dtype) for leaf in leaves])
  encode = ChatTemplateTokenizer(smollm2_tokenizer, 1024)
  # Real examples, ids folded into the tiny vocabulary: what matters is which tokens see which.
  examples = [dict(e, input_ids=e["input_ids"] % 512) for e in map(encode, _fixture_records()[:3])]
  seq_len = sum(len(e["input_ids"]) for e in examples) + 7
  row = assemble_row(examples, seq_len)
  packed_apply = jax.jit(lambda ids, mask, pos, seg: model.apply(
      {"params": params}, ids, attention_mask=mask, position_ids=pos, segment_ids=seg))
  unpacked_apply = jax.jit(lambda ids, mask: model.apply({"params": params}, ids, attention_mask=mask))
  packed = packed_apply(*(jnp.asarray(row[k])[None] for k in
                          ("input_ids", "attention_mask", "position_ids", "segment_ids")))[0]
  for s, example in enumerate(examples, start=1):
    where = np.flatnonzero(row["segment_ids"] == s)
    alone_ids = np.zeros(seq_len, np.int32)  # same shape as the packed row: one compile; pad at the end
    alone_ids[:len(where)] = example["input_ids"]
    alone_mask = (np.arange(seq_len) < len(where)).astype(np.int32)
    alone = unpacked_apply(jnp.asarray(alone_ids)[None], jnp.asarray(alone_mask)[None])[0]
    np.testing.assert_allclose(np.asarray(packed)[where], np.asarray(alone)[:len(where)], atol=2e-4, rtol=2e-4)
    assert not np.allclose(np.asarray(packed)[where][1:], np.asarray(packed)[where][:-1])  # not trivially equal


def test_iterator_state_restores_at_the_same_element(smollm2_tokenizer):
  records = _many_records()
  config = gp.PipelineConfig(seq_len=512, batch_size=2, seed=7, num_epochs=2, shuffle_options=True,
                             process_index=0, process_count=1)
  ds = gp.build_dataset(records, smollm2_tokenizer, config)
  assert_resumes_at_the_same_element(ds)


def test_process_shards_are_disjoint_and_cover_the_data():
  records = list(range(103))
  shards = []
  for index in range(4):
    config = gp.PipelineConfig(seed=5, process_index=index, process_count=4)
    shards.append([gp.record_dataset(records, config)[i] for i in range(len(gp.record_dataset(records, config)))])
  seen = [x for shard in shards for x in shard]
  assert len(seen) == len(set(seen)) == 103 and set(seen) == set(records)
  assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_shuffling_is_seeded_and_deterministic():
  records = list(range(50))
  order = lambda seed: list(gp.record_dataset(records, gp.PipelineConfig(seed=seed, process_index=0,
                                                                          process_count=1)))
  assert order(1) == order(1) and order(1) != order(2) and sorted(order(1)) == records
