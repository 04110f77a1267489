"""The converted SmolLM2-135M-Instruct checkpoint (real weights) against transformers.

Tolerances: float32 logits within 1e-3 of transformers on three chat prompts; greedy
continuations identical. bfloat16 params+compute: difference from float32 measured and bounded.
"""
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from surveylm_jax import inference, models

PROMPTS = [
    "Survey question: How satisfied are you with your life? Options: A. Very satisfied "
    "B. Somewhat satisfied C. Not satisfied. Answer with one letter.",
    "Do you think the government spends too much, about right, or too little on education?",
    "What is the capital of France?",
]


@pytest.fixture(scope="module")
def batch(smollm2_tokenizer):
  texts = [smollm2_tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                 add_generation_prompt=True) for p in PROMPTS]
  smollm2_tokenizer.padding_side = "left"
  enc = smollm2_tokenizer(texts, return_tensors="np", padding=True, add_special_tokens=False)
  return enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)


@pytest.fixture(scope="module")
def torch_model(smollm2_path):
  return transformers.AutoModelForCausalLM.from_pretrained(smollm2_path,
                                                           dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def jax_model(smollm2_path):
  return models.load_pretrained(smollm2_path, dtype="float32")


def test_real_weights_logits_match(batch, torch_model, jax_model):
  ids, mask = batch
  model, params = jax_model
  positions = np.maximum(np.cumsum(mask, -1) - 1, 0)
  with torch.no_grad():
    ref = torch_model(torch.tensor(ids), attention_mask=torch.tensor(mask),
                      position_ids=torch.tensor(positions)).logits.numpy()
  ours = np.asarray(model.apply({"params": params}, jnp.asarray(ids),
                                attention_mask=jnp.asarray(mask)))
  diff = np.abs(ours - ref)[mask.astype(bool)].max()
  print(f"SmolLM2 float32 logits max abs diff: {diff:.2e}")
  assert diff <= 1e-3


def test_real_weights_greedy_continuations_identical(batch, torch_model, jax_model,
                                                     smollm2_tokenizer):
  ids, mask = batch
  model, params = jax_model
  ours = inference.generate(model, params, ids, mask, max_new_tokens=16, temperature=0.0)
  with torch.no_grad():
    ref = torch_model.generate(torch.tensor(ids), attention_mask=torch.tensor(mask),
                               max_new_tokens=16, do_sample=False,
                               eos_token_id=model.config.eos_token_ids[0],
                               pad_token_id=model.config.pad_token_id).numpy()
  width = ref.shape[1]
  # transformers stops once every row ended; ours keeps the fixed width, padded after EOS.
  np.testing.assert_array_equal(ours[:, :width], ref)
  assert (ours[:, width:] == model.config.pad_token_id).all()
  for row in ours:
    print(repr(smollm2_tokenizer.decode(row[ids.shape[1]:], skip_special_tokens=True)))


def test_bfloat16_path_runs_and_stays_close(batch, jax_model, smollm2_path):
  ids, mask = batch
  model32, params32 = jax_model
  model16, params16 = models.load_pretrained(smollm2_path, dtype="bfloat16")
  assert params16["embed_tokens"]["embedding"].dtype == jnp.bfloat16
  l32 = np.asarray(model32.apply({"params": params32}, jnp.asarray(ids),
                                 attention_mask=jnp.asarray(mask)))
  l16 = np.asarray(model16.apply({"params": params16}, jnp.asarray(ids),
                                 attention_mask=jnp.asarray(mask)))
  real = mask.astype(bool)
  diff = np.abs(l16 - l32)[real]
  agree = (l16.argmax(-1) == l32.argmax(-1))[real].mean()
  print(f"bf16 vs f32: max abs {diff.max():.3f}, mean abs {diff.mean():.4f}, "
        f"top-1 agreement {agree:.3f}")
  assert np.isfinite(l16).all()
  assert diff.mean() < 0.5 and agree > 0.85
