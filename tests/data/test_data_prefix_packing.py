"""Shared-prefix packing: same per-token log-probs as unpacked examples, exact masks, restorable
state, fuller rows than first-fit."""
import os

import numpy as np
import pytest

from surveylm_jax import data
from surveylm_jax.data import grain_pipeline as gp
from tests.data.pipeline_checks import assert_resumes_at_the_same_element
from surveylm_jax.data.chat_format import ChatTemplateTokenizer
from surveylm_jax.data.codebook import load_codebook
from surveylm_jax.data.prefix_packing import GroupTokenizer, group_by_prefix, prefix_key
from surveylm_jax.data.survey_converter import convert_survey, write_conversion

HERE = os.path.dirname(__file__)
SMALL = os.path.join(HERE, "fixtures", "codebook_small_zh.yaml")


@pytest.fixture(scope="module")
def respondents(tmp_path_factory):
  """Task 4 records of the small fixture survey: 2 questions per respondent, shared backgrounds."""
  out = tmp_path_factory.mktemp("small")
  write_conversion(convert_survey(load_codebook(SMALL)), str(out))
  return list(data.read_alignsurvey(out / "task4/individual/train.json"))


def _config(**kw):
  return gp.PipelineConfig(**{**dict(seq_len=512, batch_size=2, seed=1, process_index=0,
                                     process_count=1, share_prefixes=True, drop_remainder=False), **kw})


def test_groups_follow_respondents(respondents):
  groups = group_by_prefix(respondents)
  assert sum(len(g) for g in groups) == len(respondents)
  assert any(len(g) > 1 for g in groups)
  group_of = {i: gi for gi, g in enumerate(groups) for i in g}
  for g in groups:  # one prompt prefix per group (two respondents may share a background)
    assert len({prefix_key(respondents[i]) for i in g}) == 1
  for rid in {r.respondent_id for r in respondents}:  # a respondent is never split across groups
    assert len({group_of[i] for i, r in enumerate(respondents) if r.respondent_id == rid}) == 1


def test_group_prefix_stops_before_the_answer(respondents, smollm2_tokenizer):
  groups = group_by_prefix(respondents)
  big = next(g for g in groups if len(g) > 1)
  encode = ChatTemplateTokenizer(smollm2_tokenizer, 512)
  tokenized = GroupTokenizer(smollm2_tokenizer, 512)([respondents[i] for i in big])
  prefix = tokenized["prefix"]
  assert len(prefix) > 20
  for i, member in zip(big, tokenized["members"]):
    alone = encode(respondents[i])
    np.testing.assert_array_equal(np.concatenate([prefix, member["input_ids"]]), alone["input_ids"])
    np.testing.assert_array_equal(np.concatenate([np.zeros(len(prefix), np.int32), member["loss_mask"]]),
                                  alone["loss_mask"])


def test_loss_tokens_and_option_slots_are_kept_exactly(respondents, smollm2_tokenizer):
  encode = ChatTemplateTokenizer(smollm2_tokenizer, 512)
  examples = [encode(r) for r in respondents]
  want_loss = sum(int(e["loss_mask"][1:].sum()) for e in examples)
  want_slots = sum("option_ids" in e for e in examples)
  it = iter(gp.build_dataset(respondents, smollm2_tokenizer, _config(shuffle=False)))
  batches = list(it)
  counts = gp.pipeline_counts(it)
  assert counts["examples"] == len(respondents) and counts["shared_tokens_saved"] > 0
  assert sum(int(b["loss_mask"].sum()) for b in batches) == want_loss
  assert counts["option_slots"] == want_slots
  for batch in batches:
    for row in range(batch["input_ids"].shape[0]):
      pos = batch["option_positions"][row]
      for slot in np.flatnonzero(pos >= 0):
        target_letter = batch["option_token_ids"][row, slot][np.argmax(batch["option_targets"][row, slot])]
        assert batch["targets"][row, pos[slot]] == target_letter and batch["loss_mask"][row, pos[slot]] == 1
  plain = iter(gp.build_dataset(respondents, smollm2_tokenizer, _config(shuffle=False, share_prefixes=False)))
  list(plain)
  plain_counts = gp.pipeline_counts(plain)
  assert counts["rows"] < plain_counts["rows"]


def test_shared_prefix_rows_give_the_unpacked_log_probs(respondents, smollm2_tokenizer):
  import jax
  import jax.numpy as jnp

  from surveylm_jax import models
  cfg = models.config_from_hf_dict({
      "model_type": "mistral", "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128,
      "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
      "max_position_embeddings": 1024, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
      "sliding_window": 90})
  model = models.Transformer(cfg)
  leaves, treedef = jax.tree_util.tree_flatten(models.abstract_params(model))
  rng = np.random.default_rng(0)
  params = jax.tree_util.tree_unflatten(
      treedef, [jnp.asarray(rng.normal(0.0, 0.1, leaf.shape), leaf.dtype) for leaf in leaves])
  seq_len = 512
  batch = next(b for b in gp.build_dataset(respondents, smollm2_tokenizer,
                                           _config(shuffle=False, batch_size=1, seq_len=seq_len))
               if b["prefix_segment_ids"].max() > 0 and b["segment_ids"].max() >= 4)
  row = {k: np.asarray(v[0]) for k, v in batch.items()}
  assert row["prefix_segment_ids"].max() > 0 and row["segment_ids"].max() >= 3

  packed_logits = jax.jit(lambda *a: model.apply({"params": params}, a[0] % 512, attention_mask=a[1],
                                                 position_ids=a[2], segment_ids=a[3],
                                                 prefix_segment_ids=a[4]))(
      *(jnp.asarray(row[k])[None] for k in ("input_ids", "attention_mask", "position_ids",
                                            "segment_ids", "prefix_segment_ids")))[0]
  alone_apply = jax.jit(lambda ids, mask: model.apply({"params": params}, ids % 512, attention_mask=mask))
  checked = 0
  for segment in range(1, row["segment_ids"].max() + 1):
    where = np.flatnonzero(row["segment_ids"] == segment)
    prefix_segment = row["prefix_segment_ids"][where[0]]
    if prefix_segment == 0:
      continue
    prefix_at = np.flatnonzero(row["segment_ids"] == prefix_segment)
    context = np.concatenate([prefix_at, where])
    alone_ids = np.zeros(seq_len, np.int32)
    alone_ids[:len(context)] = row["input_ids"][context]
    alone = alone_apply(jnp.asarray(alone_ids)[None],
                        jnp.asarray((np.arange(seq_len) < len(context)).astype(np.int32))[None])[0]
    np.testing.assert_allclose(np.asarray(packed_logits)[where],
                               np.asarray(alone)[len(prefix_at):len(context)], atol=2e-4, rtol=2e-4)
    checked += 1
  assert checked >= 2


def test_prefix_packing_state_restores(respondents, smollm2_tokenizer):
  config = _config(seq_len=384, num_epochs=2, shuffle_options=True, drop_remainder=True)
  ds = gp.build_dataset(respondents, smollm2_tokenizer, config)
  assert_resumes_at_the_same_element(ds)


def test_share_prefixes_needs_packing(respondents, smollm2_tokenizer):
  with pytest.raises(ValueError, match="needs pack=True"):
    gp.build_dataset(respondents, smollm2_tokenizer, _config(pack=False))


def test_max_group_members_splits_groups(respondents, smollm2_tokenizer):
  whole = gp.group_dataset(respondents, _config())
  split = gp.group_dataset(respondents, _config(max_group_members=1))
  assert len(split) == len(respondents) > len(whole)
  assert sorted(r.source.index for g in split for r in g) == sorted(r.source.index for r in respondents)
  it = iter(gp.build_dataset(respondents, smollm2_tokenizer, _config(max_group_members=1)))
  list(it)
  assert gp.pipeline_counts(it)["shared_tokens_saved"] == 0
