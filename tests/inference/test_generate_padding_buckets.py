"""Generation for tasks 1-3: either padding side gives each prompt its own continuation, prompt
lengths fall into a bounded set of buckets (so few programs compile), and every output that
reaches max_new_tokens without an end-of-sequence token is counted as cut."""
import dataclasses
import math

import jax
import numpy as np
import pytest

from surveylm_jax import models
from surveylm_jax.eval.generated_tasks import DEFAULT_MAX_NEW_TOKENS, generate_texts
from surveylm_jax.inference import generate, length_buckets
from surveylm_jax.inference.generate import _generate, is_left_padded, left_align

TINY = dict(model_type="llama", vocab_size=97, hidden_size=32, intermediate_size=64,
            num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=256, rms_norm_eps=1e-6, tie_word_embeddings=False,
            rope_theta=10000.0, bos_token_id=1, eos_token_id=None)


def _tiny(**overrides):
  model = models.Transformer(models.config_from_hf_dict({**TINY, **overrides}))
  params = models.init_params(model, jax.random.PRNGKey(5))
  # init_params draws small weights; larger ones make greedy tokens depend on the prompt.
  params = jax.tree_util.tree_map(lambda x: x * 4.0 if x.ndim >= 2 else x, params)
  return model, params


@pytest.fixture(scope="module")
def tiny():
  return _tiny()


def _padded(prompts, side):
  width = max(len(p) for p in prompts)
  ids = np.zeros((len(prompts), width), np.int32)
  mask = np.zeros_like(ids)
  for r, p in enumerate(prompts):
    cols = slice(0, len(p)) if side == "right" else slice(width - len(p), width)
    ids[r, cols], mask[r, cols] = p, 1
  return ids, mask


def test_right_and_left_padded_batches_match_each_prompt_alone(tiny):
  model, params = tiny
  prompts = [[5, 17, 33, 8, 61, 20, 44], [9, 70, 3]]
  alone = [generate(model, params, np.array([p]), max_new_tokens=6, return_prompt=False)[0]
           for p in prompts]
  assert not np.array_equal(alone[0], alone[1])   # the check below can tell the rows apart
  for side in ("left", "right"):
    ids, mask = _padded(prompts, side)
    new = generate(model, params, ids, mask, max_new_tokens=6, return_prompt=False)
    for row, expected in zip(new, alone):
      np.testing.assert_array_equal(row, expected, err_msg=f"{side}-padded batch")


def test_left_align_keeps_token_order_and_leaves_left_padding_alone():
  ids, mask = _padded([[4, 5, 6], [7]], "right")
  assert not is_left_padded(mask)
  aligned_ids, aligned_mask = left_align(ids, mask)
  np.testing.assert_array_equal(aligned_mask, [[1, 1, 1], [0, 0, 1]])
  np.testing.assert_array_equal(aligned_ids[1, -1], 7)
  np.testing.assert_array_equal(aligned_ids[0], [4, 5, 6])
  left_ids, left_mask = _padded([[4, 5, 6], [7]], "left")
  assert is_left_padded(left_mask)
  np.testing.assert_array_equal(left_align(left_ids, left_mask)[0], left_ids)


def test_a_row_without_real_tokens_is_refused(tiny):
  model, params = tiny
  with pytest.raises(ValueError, match="no real token"):
    generate(model, params, np.array([[3, 4], [0, 0]]), np.array([[1, 1], [0, 0]]))


def test_buckets_are_few_and_hold_every_length():
  cap = 8192
  buckets = length_buckets.bucket_lengths(cap)
  assert buckets[-1] == cap and list(buckets) == sorted(set(buckets))
  # Two per doubling from 16 on, plus the cap.
  assert len(buckets) <= 2 * math.ceil(math.log2(cap / 16)) + 1
  for length in range(1, cap + 1):
    size = length_buckets.bucket_for(length, buckets)
    assert size >= length
    assert length <= 16 or size <= 1.5 * length
  with pytest.raises(ValueError, match="longer than the largest length bucket"):
    length_buckets.bucket_for(cap + 1, buckets)
  assert length_buckets.bucket_lengths(40) == (16, 24, 32, 40)


def test_many_prompt_lengths_use_one_shape_per_bucket(tiny):
  model, params = tiny
  rng = np.random.default_rng(0)
  lengths = list(range(1, 25)) + [3, 17, 20]   # 27 prompts: the last batch is a short one
  token_rows = [list(rng.integers(3, 97, n)) for n in lengths]
  stats = length_buckets.GenerationStats()
  programs_before = _generate._cache_size()   # jit's own count of compiled programs
  new = length_buckets.generate_bucketed(model, params, token_rows, batch_size=4,
                                         max_new_tokens=2, pad_id=0, max_prompt_len=24,
                                         stats=stats)
  assert len(new) == len(token_rows) and all(row.shape == (2,) for row in new)
  buckets = length_buckets.bucket_lengths(24)
  assert buckets == (16, 24)
  assert {s[1] for s in stats.shapes} == set(buckets)
  assert _generate._cache_size() - programs_before <= len(stats.shapes)
  assert {s[0] for s in stats.shapes} == {4} and {s[2] for s in stats.shapes} == {2}
  assert stats.prompt_tokens == sum(lengths) and stats.padded_tokens > stats.prompt_tokens
  summary = stats.summary()
  assert summary["programs"] == len(stats.shapes) and summary["outputs"] == len(lengths)


def test_outputs_without_eos_are_counted_as_cut(tiny):
  model, params = tiny
  token_rows = [[5, 17, 33], [9, 70, 3, 12], [40, 2, 8], [66]]
  stats = length_buckets.GenerationStats()
  new = length_buckets.generate_bucketed(model, params, token_rows, batch_size=4,
                                         max_new_tokens=2, pad_id=0, stats=stats)
  assert stats.cut == [True] * 4 and stats.summary()["cut_at_max_new_tokens"] == 4
  # The same model stopping on the first token some rows produce: those rows are not cut.
  eos = int(new[0][0])
  stopping = models.Transformer(dataclasses.replace(model.config, eos_token_ids=(eos,)))
  stats = length_buckets.GenerationStats()
  length_buckets.generate_bucketed(stopping, params, token_rows, batch_size=4, max_new_tokens=2,
                                   pad_id=0, stats=stats)
  assert stats.cut == [eos not in row for row in new]
  assert stats.n_cut < 4


def test_generate_texts_keeps_prompt_order_and_fills_stats(smollm2_tokenizer):
  model, params = _tiny(vocab_size=49152, hidden_size=16, intermediate_size=32,
                        num_hidden_layers=1, max_position_embeddings=2048)
  prompts = ["Which income band?", "Stance on public services, in JSON please.", "Hello"]
  stats = length_buckets.GenerationStats()
  texts = generate_texts(model, params, smollm2_tokenizer, prompts, batch_size=2,
                         max_new_tokens=3, label="test", stats=stats)
  alone = [generate_texts(model, params, smollm2_tokenizer, [p], batch_size=1, max_new_tokens=3,
                          label="test")[0] for p in prompts]
  assert texts == alone
  assert len(stats.cut) == 3 and {s[0] for s in stats.shapes} == {2}
  assert len(stats.shapes) == 1    # all three chat prompts fall in one bucket


def test_default_limits_cover_every_generated_task():
  assert set(DEFAULT_MAX_NEW_TOKENS) == {"task1", "task2", "task3"}
  assert all(isinstance(v, int) and v > 0 for v in DEFAULT_MAX_NEW_TOKENS.values())


def test_answer_length_tool_counts_answers_past_each_limit():
  from tools import answer_lengths

  class CharTokenizer:   # one token per character
    def encode(self, text, add_special_tokens=False):
      return list(text)

  lengths = answer_lengths.answer_lengths(CharTokenizer(), ["ab", "abcd", "a" * 9])
  np.testing.assert_array_equal(lengths, [3, 5, 10])   # answer + end-of-sequence token
  summary = answer_lengths.length_summary(lengths, limits=(4, 8, 16))
  assert summary["cut"] == {4: 2, 8: 1, 16: 0} and summary["max"] == 10
  assert answer_lengths.smallest_limit(lengths, limits=(4, 8, 16), max_cut_share=0.4) == 8
