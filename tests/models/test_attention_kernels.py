"""Fused attention (`models.attention`) against the plain XLA path.

The splash kernel runs in Pallas interpret mode on this CPU: the same kernel code, executed
with XLA ops. Tolerance: logits and LoRA gradients (max abs difference) <= 1e-4 at real tokens,
float32, on tiny configs of every family, with packed rows, shared-prefix segments, left padding,
a sliding window, and a key/value context. The TPU lowering of the same kernel is compiled in
tests/train/test_train_tpu_compile.py.
"""
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from surveylm_jax import lora, models
from surveylm_jax.models import attention

TOL = 1e-4
T = 128

_COMMON = dict(vocab_size=160, hidden_size=64, intermediate_size=112, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
               rms_norm_eps=1e-6)
FAMILIES = {
    "qwen2_bias": dict(_COMMON, model_type="qwen2", tie_word_embeddings=True),
    "qwen3_qknorm_headdim": dict(_COMMON, model_type="qwen3", head_dim=24,
                                 tie_word_embeddings=True),
    "llama3_rope": dict(_COMMON, model_type="llama", tie_word_embeddings=False,
                        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                          high_freq_factor=4.0,
                                          original_max_position_embeddings=64)),
    "mistral_sliding_window": dict(_COMMON, model_type="mistral", sliding_window=40,
                                   tie_word_embeddings=False),
}


def _batch(shared_prefix: bool):
  """Row 0: packed -- a background (segment 1) and two questions (2, 3) that read it when
  `shared_prefix` (positions continuing after it), else three plain packed segments -- then
  padding. Row 1: one left-padded prompt."""
  rng = np.random.RandomState(0)
  ids = rng.randint(3, 160, (2, T)).astype(np.int32)
  mask = np.ones((2, T), np.int32)
  seg = np.zeros((2, T), np.int32)
  prefix = np.zeros((2, T), np.int32)
  pos = np.zeros((2, T), np.int32)
  seg[0, :50], seg[0, 50:90], seg[0, 90:120] = 1, 2, 3
  mask[0, 120:] = 0
  ids[0, 120:] = 0
  if shared_prefix:
    prefix[0, 50:120] = 1
    pos[0, :50], pos[0, 50:90], pos[0, 90:120] = np.arange(50), 50 + np.arange(40), 50 + np.arange(30)
  else:
    pos[0, :50], pos[0, 50:90], pos[0, 90:120] = np.arange(50), np.arange(40), np.arange(30)
  mask[1, :37] = 0
  ids[1, :37] = 0
  seg[1] = mask[1]
  pos[1] = np.maximum(np.cumsum(mask[1]) - 1, 0)
  targets = rng.randint(3, 160, (2, T)).astype(np.int32)
  return dict(input_ids=ids, attention_mask=mask, segment_ids=seg, position_ids=pos,
              prefix_segment_ids=prefix if shared_prefix else None), targets


def _run(name: str, hf: dict, batch, targets):
  """(logits, LoRA grads) with `config.attention = name`, same params and adapter."""
  cfg = models.config_from_hf_dict(hf).replace(attention=name)
  model = models.Transformer(cfg)
  params = models.init_params(model, jax.random.PRNGKey(0))
  lcfg = lora.LoraConfig(rank=4, alpha=8.0)
  adapter = lora.init(params, lcfg, jax.random.PRNGKey(1))
  # b = 0 would make every `a` gradient zero; a random b tests both factors.
  adapter = jax.tree_util.tree_map_with_path(
      lambda p, x: 0.05 * jax.random.normal(jax.random.PRNGKey(2), x.shape)
      if jax.tree_util.keystr(p).endswith("['b']") else x, adapter)
  mask = jnp.asarray(batch["attention_mask"], jnp.float32)

  def loss(adapter):
    logits = lora.apply(model, params, adapter, lcfg, **batch)
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], -1)[..., 0]
    return (nll * mask).sum() / mask.sum(), logits

  (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(adapter)
  return np.asarray(logits), grads


def _max_diff(a, b):
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
             for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_splash_matches_xla_logits_and_lora_grads(family):
  hf = FAMILIES[family]
  # A sliding window counts positions, which shared-prefix questions do not share with slots:
  # that combination runs on xla (test_select_*); windowed families are checked packed.
  batch, targets = _batch(shared_prefix="sliding_window" not in hf)
  assert attention.select(models.config_from_hf_dict(hf).replace(attention="splash"),
                          length=T, prefix=batch["prefix_segment_ids"] is not None).name == "splash"
  xla_logits, xla_grads = _run("xla", hf, batch, targets)
  splash_logits, splash_grads = _run("splash", hf, batch, targets)
  real = batch["attention_mask"].astype(bool)
  assert np.abs(xla_logits - splash_logits)[real].max() <= TOL, family
  assert _max_diff(xla_grads, splash_grads) <= TOL, family
  # The gradients are not trivially small: a wrong combination would show.
  assert max(float(np.abs(np.asarray(g)).max()) for g in jax.tree_util.tree_leaves(xla_grads)) > 1e-3


def test_splash_reads_a_kv_context_like_xla():
  """Prefix reuse in scoring: the shared prefix runs once, its keys and values are read by
  every query of a later pass (a third kernel call, non-causal, combined by log-sum-exp)."""
  cfg = models.config_from_hf_dict(FAMILIES["llama3_rope"])
  rng = np.random.RandomState(3)
  prefix_ids = rng.randint(3, 160, (2, T)).astype(np.int32)
  prefix_mask = np.ones((2, T), np.int32)
  prefix_mask[1, :60] = 0                        # row 1's context is shorter (left-padded)
  prefix_pos = np.maximum(np.cumsum(prefix_mask, 1) - 1, 0).astype(np.int32)
  suffix_ids = rng.randint(3, 160, (2, T)).astype(np.int32)
  suffix_pos = (prefix_pos[:, -1:] + 1 + np.arange(T)[None]).astype(np.int32)
  suffix_mask = np.ones((2, T), np.int32)
  suffix_mask[0, 100:] = 0
  out = {}
  for name in ("xla", "splash"):
    model = models.Transformer(cfg.replace(attention=name))
    params = models.init_params(model, jax.random.PRNGKey(0))

    def run(params):
      _, context = model.apply({"params": params}, prefix_ids, attention_mask=prefix_mask,
                               position_ids=prefix_pos, return_kv=True)
      return model.apply({"params": params}, suffix_ids, attention_mask=suffix_mask,
                         position_ids=suffix_pos, context=context)
    out[name] = np.asarray(jax.jit(run)(params))
  real = suffix_mask.astype(bool)
  assert np.abs(out["xla"] - out["splash"])[real].max() <= TOL


@pytest.mark.parametrize("case, kwargs, reason", [
    ("decode", dict(decode=True), "decode steps"),
    ("few queries", dict(query_index=True), "queries computed at a few positions"),
    ("odd length", dict(length=200), "multiples of 128"),
    ("odd context", dict(context_length=100), "multiples of 128"),
])
def test_splash_falls_back_to_xla_with_a_logged_reason(case, kwargs, reason, caplog):
  cfg = models.config_from_hf_dict(FAMILIES["llama3_rope"]).replace(attention="splash")
  kwargs = dict(dict(length=T), **kwargs)
  attention._LOGGED.clear()   # pylint: disable=protected-access
  with caplog.at_level(logging.WARNING):
    kernel = attention.select(cfg, **kwargs)
  assert kernel.name == "xla", case
  assert reason in caplog.text and "'splash' -> xla" in caplog.text, case


def test_window_rules_and_cudnn_off_gpu(caplog):
  """A window every layer shares is one static kernel mask; windows that differ per layer, a
  window with shared-prefix segments, and cuDNN off a GPU fall back to xla with the reason."""
  mistral = models.config_from_hf_dict(dict(FAMILIES["mistral_sliding_window"],
                                             num_hidden_layers=2))
  assert attention.select(mistral.replace(attention="splash"), length=T).window == 40
  # A window longer than the pass changes nothing: no window in the kernel.
  assert attention.select(mistral.replace(attention="splash"), length=T,
                          context_length=0).window == 40
  long = mistral.replace(sliding_windows=(4096, 4096), attention="splash")
  assert attention.select(long, length=T).window is None
  attention._LOGGED.clear()   # pylint: disable=protected-access
  with caplog.at_level(logging.WARNING):
    mixed = mistral.replace(sliding_windows=(40, None), attention="splash")
    assert attention.select(mixed, length=T).name == "xla"
    assert attention.select(mistral.replace(attention="splash"), length=T,
                            prefix=True).name == "xla"
    assert attention.select(mistral.replace(attention="cudnn"), length=T).name == "xla"
  assert "one sliding window for every layer" in caplog.text
  assert "shared-prefix segments" in caplog.text
  assert "cudnn needs a GPU" in caplog.text
  # auto on a CPU is xla, silently (nothing asked for was refused).
  assert attention.select(mistral.replace(attention="auto"), length=T).name == "xla"
  assert attention.select(mistral.replace(attention="auto", attention_platform="tpu"),
                          length=T).name == "splash"


def test_unknown_attention_names_the_valid_ones():
  with pytest.raises(models.ModelConfigError, match="xla, splash, cudnn, auto"):
    models.config_from_hf_dict(FAMILIES["llama3_rope"]).replace(attention="flash")
