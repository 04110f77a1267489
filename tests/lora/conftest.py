"""Tiny random models for the LoRA tests: a pure-JAX one, and transformers twins for PEFT parity.

Dimensions are all distinct (embed 24, q heads·head_dim 32, kv 16, mlp 40) so a transposed or
mis-reshaped factor cannot pass a shape check by accident.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from surveylm_jax import models

TINY_HF = dict(model_type="llama", vocab_size=64, hidden_size=24, intermediate_size=40,
               num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
               max_position_embeddings=64, rms_norm_eps=1e-6, tie_word_embeddings=False)


@dataclasses.dataclass
class Tiny:
  model: models.Transformer
  params: dict


@pytest.fixture(scope="session")
def tiny():
  """A random pure-JAX llama-style model."""
  cfg = models.config_from_hf_dict(TINY_HF)
  model = models.Transformer(cfg)
  return Tiny(model, numpy_params(model))


def numpy_params(model, seed=0):
  """Random params filled from numpy: the shapes come from `eval_shape`, so nothing compiles
  (random initialisers cost seconds of XLA compile each on CPU)."""
  import flax.linen as nn
  rng = np.random.RandomState(seed)
  abstract = nn.meta.unbox(models.abstract_params(model))

  def fill(path, leaf):
    if path[-1].key == "scale":        # norms: around 1, but not exactly, so they are exercised
      value = 1.0 + 0.1 * rng.standard_normal(leaf.shape)
    else:
      value = 0.2 * rng.standard_normal(leaf.shape)
    return jnp.asarray(value, leaf.dtype)
  return jax.tree_util.tree_map_with_path(fill, abstract)


@pytest.fixture(scope="session")
def tiny_adapter(tiny):
  """(cfg, fresh adapter, the same adapter with random B) on every projection of `tiny`."""
  from surveylm_jax import lora
  cfg = lora.LoraConfig(rank=4, alpha=8)
  fresh = lora.init(tiny.params, cfg, jax.random.PRNGKey(0))
  return cfg, fresh, randomise_b(fresh)


def batch(vocab=64, seed=0, length=7):
  """Three rows, the second left-padded by 3. (3 and 7 are no kernel dimension, which the
  weight-gradient check relies on.)"""
  rng = np.random.RandomState(seed)
  ids = rng.randint(1, vocab, (3, length)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[1, :3] = 0
  ids[1, :3] = 0
  return jnp.asarray(ids), jnp.asarray(mask)


def randomise_b(lora_params, seed=1, scale=0.5):
  """Non-zero B factors, so an adapter really changes the output (numpy: no compile)."""
  rng = np.random.RandomState(seed)
  leaves, tree = jax.tree_util.tree_flatten_with_path(lora_params)
  out = [jnp.asarray(scale * rng.standard_normal(x.shape), x.dtype) if path[-1].key == "b"
         else x for path, x in leaves]
  return jax.tree_util.tree_unflatten(tree, out)


def random_adapter(params, cfg, seed=0):
  """An adapter with random A and B for `cfg`, filled from numpy (exercises export/import of
  arbitrary trained-looking factors without compiling an init)."""
  from surveylm_jax import lora
  rng = np.random.RandomState(seed)
  out = {}
  for name in lora.resolve_targets(params, cfg):
    spec = lora.TARGET_MODULES[name]
    a_shape, b_shape = lora.core.factor_shapes(lora.core.kernel_of(params, name).shape,
                                               spec.in_axes, cfg.rank)
    node = out
    for key in spec.path:
      node = node.setdefault(key, {})
    node["a"] = jnp.asarray(0.3 * rng.standard_normal(a_shape), jnp.float32)
    node["b"] = jnp.asarray(0.3 * rng.standard_normal(b_shape), jnp.float32)
  return out


# ---------------------------------------------------------------------------------------------
# transformers twins (PEFT parity)

HF_FAMILIES = {
    # qwen2: q/k/v biases; tied embeddings.
    "qwen2": ("Qwen2Config", dict(vocab_size=96, hidden_size=32, intermediate_size=56,
                                  num_hidden_layers=2, num_attention_heads=4,
                                  num_key_value_heads=2, tie_word_embeddings=True)),
    # llama: GQA with an explicit head_dim, so q's out features (48) differ from hidden (32).
    "llama": ("LlamaConfig", dict(vocab_size=96, hidden_size=32, intermediate_size=56,
                                  num_hidden_layers=3, num_attention_heads=4,
                                  num_key_value_heads=2, head_dim=12,
                                  tie_word_embeddings=False)),
}


@dataclasses.dataclass
class HFTwin:
  hf_config: object
  state: dict                 # numpy state dict of the base model
  model: models.Transformer
  params: dict

  def torch_model(self):
    """A fresh transformers model with the base weights (PEFT wraps and mutates its input)."""
    import torch
    import transformers
    torch_model = transformers.AutoModelForCausalLM.from_config(self.hf_config)
    torch_model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in self.state.items()})
    return torch_model.float().eval()


def make_twin(family, seed=0) -> HFTwin:
  import torch
  import transformers
  cls_name, kwargs = HF_FAMILIES[family]
  hf_config = getattr(transformers, cls_name)(max_position_embeddings=64, rms_norm_eps=1e-6,
                                              **kwargs)
  hf_config._attn_implementation = "eager"
  torch.manual_seed(seed)
  torch_model = transformers.AutoModelForCausalLM.from_config(hf_config).float().eval()
  with torch.no_grad():
    for name, p in torch_model.named_parameters():
      if name.endswith(".bias"):
        p.copy_(0.1 * torch.randn_like(p))
  state = {k: v.detach().numpy().copy() for k, v in torch_model.state_dict().items()}
  cfg = models.config_from_hf_dict(hf_config.to_dict())
  params = models.params_from_tensors(models.hf_io.DictTensors(state), cfg)
  return HFTwin(hf_config, state, models.Transformer(cfg),
                jax.tree_util.tree_map(jnp.asarray, params))


@pytest.fixture(scope="session")
def twins():
  """family -> HFTwin, built once per session."""
  return {family: make_twin(family) for family in HF_FAMILIES}


def torch_logits(torch_model, ids, mask):
  import torch
  with torch.no_grad():
    out = torch_model(input_ids=torch.from_numpy(np.asarray(ids, np.int64)),
                      attention_mask=torch.from_numpy(np.asarray(mask, np.int64)))
  return out.logits.float().numpy()


def real_positions(mask):
  return np.asarray(mask).astype(bool)


# Eager `model.apply` re-compiles the layer scan on every call (~1.5 s); tests share jitted
# forwards instead, one per (architecture, adapter config, dropout on/off).
_FORWARDS = {}


def logits(model, params, ids, mask, lora_params=None, cfg=None, dropout_rng=None):
  """Base forward when `lora_params` is None, else the unmerged LoRA forward (jitted, cached)."""
  from surveylm_jax import lora
  key = (model.config, cfg, dropout_rng is not None)
  if key not in _FORWARDS:
    if cfg is None:
      fn = lambda p, lp, i, m, r: model.apply({"params": p}, i, attention_mask=m)
    elif dropout_rng is None:
      fn = lambda p, lp, i, m, r: lora.apply(model, p, lp, cfg, i, attention_mask=m)
    else:
      fn = lambda p, lp, i, m, r: lora.apply(model, p, lp, cfg, i, attention_mask=m,
                                             deterministic=False, rngs={"dropout": r})
    _FORWARDS[key] = jax.jit(fn)
  return np.asarray(_FORWARDS[key](params, lora_params, ids, mask, dropout_rng))


def _token_loss(logits, ids, mask):
  """Mean next-token cross-entropy over real target positions."""
  logp = jax.nn.log_softmax(logits[:, :-1])
  target_logp = jnp.take_along_axis(logp, ids[:, 1:, None], axis=-1)[..., 0]
  weights = mask[:, 1:].astype(jnp.float32)
  return -(target_logp * weights).sum() / weights.sum()


def lora_loss_fn(model, cfg):
  """(lora_params, params, ids, mask, dropout_rng) -> loss of the LoRA forward in training mode."""
  from surveylm_jax import lora

  def loss(lora_params, params, ids, mask, rng):
    logits = lora.apply(model, params, lora_params, cfg, ids, attention_mask=mask,
                        deterministic=False, rngs={"dropout": rng})
    return _token_loss(logits, ids, mask)
  return loss


_GRADS = {}


def lora_value_and_grad(model, cfg):
  """Jitted value_and_grad of `lora_loss_fn` with respect to lora_params (cached)."""
  key = (model.config, cfg)
  if key not in _GRADS:
    _GRADS[key] = jax.jit(jax.value_and_grad(lora_loss_fn(model, cfg)))
  return _GRADS[key]


@pytest.fixture(scope="session")
def helpers():
  """The helper functions above (test modules cannot import a conftest under importlib mode)."""
  import types
  return types.SimpleNamespace(batch=batch, randomise_b=randomise_b, torch_logits=torch_logits,
                               real_positions=real_positions, make_twin=make_twin,
                               logits=logits, token_loss=_token_loss, lora_loss_fn=lora_loss_fn,
                               lora_value_and_grad=lora_value_and_grad,
                               random_adapter=random_adapter)
