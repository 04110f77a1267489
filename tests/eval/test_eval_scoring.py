"""Option scoring: shared-prefix reuse (root, group prefixes, packed suffix rows reading their
keys and values) gives the same numbers as a plain forward pass."""
import jax
import numpy as np
import pytest

from surveylm_jax import models
from surveylm_jax.inference import prefix_plan, scoring


@pytest.fixture(scope="module")
def tiny():
  cfg = models.config_from_hf_dict(dict(
      model_type="llama", vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-6,
      tie_word_embeddings=False, rope_theta=10000.0, bos_token_id=1, eos_token_id=2))
  model = models.Transformer(cfg)
  params = models.init_params(model, jax.random.PRNGKey(3))
  # init_params uses small weights: scale them so option probabilities differ clearly.
  params = jax.tree_util.tree_map(lambda x: x * 4.0 if x.ndim >= 2 else x, params)
  return model, params


def _reference_log_probs(model, params, prompts, options):
  """Plain full forward passes (one right-padded batch, full-vocabulary logits from the model)."""
  length = max(len(p) for p in prompts)
  ids = np.zeros((len(prompts), length), np.int32)
  mask = np.zeros_like(ids)
  for i, p in enumerate(prompts):
    ids[i, :len(p)], mask[i, :len(p)] = p, 1
  logits = jax.jit(model.apply)({"params": params}, ids, attention_mask=mask)
  out = []
  for i, (p, o) in enumerate(zip(prompts, options)):
    logp = jax.nn.log_softmax(logits[i, len(p) - 1])
    out.append(np.array([float(jax.nn.logsumexp(logp[np.asarray(v)])) for v in o]))
  return out


def _prompts(rng):
  """Three 'respondents' (shared backgrounds after a common instruction) with 2-4 questions
  each, plus two loners that share only the instruction."""
  prompts, keys = [], []
  instruction = list(rng.integers(3, 97, size=7))
  for r in range(3):
    background = instruction + list(rng.integers(3, 97, size=int(rng.integers(5, 30))))
    for _ in range(int(rng.integers(2, 5))):
      prompts.append(background + list(rng.integers(3, 97, size=int(rng.integers(1, 20)))))
      keys.append(f"respondent{r}")
  for _ in range(2):
    prompts.append(instruction + list(rng.integers(3, 97, size=int(rng.integers(2, 25)))))
    keys.append(None)
  options = [[(10 + k, 40 + k) for k in range(int(rng.integers(2, 6)))]
             for _ in prompts]
  return prompts, keys, options


def test_prefix_reuse_matches_full_forward(tiny):
  model, params = tiny
  prompts, keys, options = _prompts(np.random.default_rng(0))
  # Short rows: groups take several rows and batches span groups (each row reads its own).
  shared = scoring.score_options(model, params, prompts, options, prefix_keys=keys,
                                 batch_size=2, length_step=32, pack_length=30, pack_rows=3)
  plan = prefix_plan.make_plan(prompts, keys, 30)
  assert len(plan.root) == 7 and [bool(g.prefix) for g in plan.groups] == [True] * 3 + [False]
  assert any(len(g.rows) > 1 for g in plan.groups)
  counts = plan.token_counts()
  assert counts["prompts"] == len(prompts) and counts["computed"] < counts["whole_prompts"]
  plain = scoring.score_options(model, params, prompts, options, batch_size=2, length_step=32)
  refs = _reference_log_probs(model, params, prompts, options)
  for p, o, s, f, ref in zip(prompts, options, shared, plain, refs):
    # float32 through a cached prefix vs one pass: error grows with |log p| (~12 here).
    np.testing.assert_allclose(s.log_probs, ref, rtol=1e-5, atol=2e-5)
    np.testing.assert_allclose(f.log_probs, ref, rtol=1e-5, atol=2e-5)
    np.testing.assert_allclose(s.probs.sum(), 1.0, atol=1e-9)
    assert s.option_mass == pytest.approx(np.exp(ref).sum(), rel=1e-4)
    assert s.probs.shape == (len(o),)


def test_plan_without_a_shared_root_or_keys(tiny):
  """No common first token: no root pass; no keys at all: one group, suffix rows only."""
  model, params = tiny
  prompts = [[5, 6, 7, 8], [9, 6, 7], [5, 6, 11, 12, 13]]
  options = [[(20,), (21,)]] * 3
  keys = ["a", None, "a"]
  plan = prefix_plan.make_plan(prompts, keys, 16)
  assert plan.root == [] and [g.prefix for g in plan.groups] == [[5, 6], []]
  refs = _reference_log_probs(model, params, prompts, options)
  for keys in (keys, ["x", "y", "z"]):
    out = scoring.score_options(model, params, prompts, options, prefix_keys=keys,
                                length_step=8, pack_length=16, pack_rows=2)
    for s, ref in zip(out, refs):
      np.testing.assert_allclose(s.log_probs, ref, rtol=1e-5, atol=2e-5)


def test_group_where_one_prompt_is_the_common_prefix(tiny):
  model, params = tiny
  base = [5, 6, 7, 8, 9, 10]
  prompts = [base, base + [11, 12], base + [13]]
  options = [[(20,), (21,)]] * 3
  out = scoring.score_options(model, params, prompts, options, prefix_keys=["g"] * 3,
                             batch_size=2, length_step=32, pack_length=8)
  for s, ref in zip(out, _reference_log_probs(model, params, prompts, options)):
    np.testing.assert_allclose(s.log_probs, ref, rtol=1e-5, atol=2e-5)


def test_variants_are_summed(tiny):
  model, params = tiny
  prompt = [4, 5, 6, 7]
  both = scoring.score_options(model, params, [prompt], [[(10, 11), (12,)]], length_step=32)[0]
  single = scoring.score_options(model, params, [prompt], [[(10,), (11,), (12,)]], length_step=32)[0]
  np.testing.assert_allclose(np.exp(both.log_probs[0]),
                             np.exp(single.log_probs[0]) + np.exp(single.log_probs[1]), rtol=1e-5)


def test_bad_inputs_are_named(tiny):
  model, params = tiny
  with pytest.raises(ValueError, match="prompt 0 has 1 tokens"):
    scoring.score_options(model, params, [[3]], [[(4,)]])
  with pytest.raises(ValueError, match="2 prompts but 1 option lists"):
    scoring.score_options(model, params, [[3, 4], [5, 6]], [[(4,)]])
  with pytest.raises(ValueError, match="prompt 0: every option"):
    scoring.score_options(model, params, [[3, 4]], [[(4,), ()]])


def test_letter_token_ids_on_smollm2(smollm2_tokenizer):
  ids = scoring.letter_token_ids(smollm2_tokenizer, ["A", "B", "C"])
  assert [len(v) for v in ids] == [2, 2, 2]
  assert smollm2_tokenizer.decode([ids[2][0]]) == "C"
  assert smollm2_tokenizer.decode([ids[2][1]]) == " C"


def test_plan_covers_every_prompt_once_within_row_capacity():
  """Every prompt appears in exactly one row; rows respect pack_length (a longer suffix alone);
  root + group prefix + suffix rebuild each prompt."""
  rng = np.random.default_rng(5)
  root = [1, 2, 3]
  prompts, keys = [], []
  for r in range(4):
    background = root + list(rng.integers(5, 50, size=int(rng.integers(3, 9))))
    for _ in range(int(rng.integers(3, 12))):
      prompts.append(background + list(rng.integers(5, 50, size=int(rng.integers(2, 15)))))
      keys.append(r)
  prompts.append(root + list(range(5, 45)))   # a loner longer than a row
  keys.append(None)
  plan = prefix_plan.make_plan(prompts, keys, 24)
  seen = []
  for group in plan.groups:
    for row in group.rows:
      assert sum(len(s.tokens) for s in row) <= 24 or len(row) == 1
      for s in row:
        assert plan.root + group.prefix + list(s.tokens) == prompts[s.prompt]
        seen.append(s.prompt)
  assert sorted(seen) == list(range(len(prompts)))
  counts = plan.token_counts()
  assert counts["whole_prompts"] == sum(map(len, prompts))
  assert counts["computed"] == (len(plan.root) + sum(len(g.prefix) for g in plan.groups)
                                + sum(len(p) for p in prompts) - sum(
                                    (len(plan.root) + len(g.prefix)) * len(g.suffixes)
                                    for g in plan.groups))
