"""Building blocks of the decoder: projections (with an optional LoRA branch), RMSNorm, RoPE.

Every param is created through `nn.with_logical_partitioning`, so it carries logical axis names
(`vocab`, `embed`, `heads`, `kv_heads`, `head_dim`, `mlp`, and `layers` added by the scan);
`sharding.py` maps those names to mesh axes.
"""
from __future__ import annotations

import functools
import math
from typing import Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from surveylm_jax.models.config import ModelConfig, RopeScaling

LORA_COLLECTION = "lora"


def jnp_dtype(name: str):
  return {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}[name]


def _contract(x, w, n: int):
  """Contracts the last `n` axes of x with the first `n` axes of w."""
  dims = (tuple(range(x.ndim - n, x.ndim)), tuple(range(n)))
  return jax.lax.dot_general(x, w, (dims, ((), ())))


def _over_tokens(small, big):
  """small [tokens..., p] x big [tokens..., q...] -> [p, q...], summed over the token axes.

  The token axes are the contraction, so both operands arrive "K-major"; XLA copies such an
  operand into [M, K] order before its matmul. Putting the rank-sized operand on the left makes
  that copy a few KB instead of a transposed copy of a whole activation (the transpose JAX's
  own rule emits, which took ~18% of a SmolLM2 LoRA step on CPU)."""
  tokens = tuple(range(small.ndim - 1))
  return jax.lax.dot_general(small, big, ((tokens, tokens), ((), ())))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def lora_delta(x, a, b, scale: float, in_axes: int):
  """`scale * ((x @ a) @ b)`: the LoRA branch of a projection (x [tokens..., in...], a [in...,
  r], b [r, out...]), with a hand-written backward pass.

  Autodiff's backward multiplies the full-width output gradient by `scale` and transposes the
  output gradient (for b's gradient) and x (for a's) into contraction-major copies; this one
  scales and transposes only rank-sized arrays and saves x @ a for the backward pass. Same
  products, so the same numbers up to float rounding order."""
  return _lora_fwd(x, a, b, scale, in_axes)[0]


def _lora_fwd(x, a, b, scale, in_axes):
  xa = _contract(x, a, in_axes)                                  # [tokens..., r]
  return scale * _contract(xa, b, 1), (x, a, b, xa)


def _lora_bwd(scale, in_axes, res, g):
  x, a, b, xa = res
  out_axes = b.ndim - 1
  # d(x @ a): the output gradient against b's output axes, scaled at rank width.
  g_out = tuple(range(g.ndim - out_axes, g.ndim))
  g_xa = scale * jax.lax.dot_general(g, b, ((g_out, tuple(range(1, b.ndim))), ((), ())))
  grad_b = scale * _over_tokens(xa, g)                          # [r, out...]
  grad_a = jnp.moveaxis(_over_tokens(g_xa, x), 0, -1)           # [r, in...] -> [in..., r]
  grad_x = jax.lax.dot_general(g_xa, a, (((g_xa.ndim - 1,), (a.ndim - 1,)), ((), ())))
  return grad_x.astype(x.dtype), grad_a.astype(a.dtype), grad_b.astype(b.dtype)


lora_delta.defvjp(_lora_fwd, _lora_bwd)


class Projection(nn.Module):
  """A linear map from the last `in_axes` axes of x to `features`, param `kernel` [in..., out...].

  When the `lora` collection holds `a` [in..., r] and `b` [r, out...] for this module, the output
  gains `lora_scale * ((x @ a) @ b)`: the frozen kernel never receives a full weight gradient,
  which is what makes LoRA training cheaper than full fine-tuning.
  """
  features: Tuple[int, ...]
  kernel_axes: Tuple[str, ...]
  in_axes: int = 1
  use_bias: bool = False
  dtype: str = "float32"
  param_dtype: str = "float32"
  lora_scale: float = 1.0
  lora_dropout: float = 0.0
  deterministic: bool = True

  @nn.compact
  def __call__(self, x):
    in_shape = x.shape[x.ndim - self.in_axes:]
    fan_in = math.prod(in_shape)
    kernel = self.param(
        "kernel",
        nn.with_logical_partitioning(nn.initializers.normal(stddev=fan_in ** -0.5),
                                     self.kernel_axes),
        tuple(in_shape) + tuple(self.features), jnp_dtype(self.param_dtype))
    compute = jnp_dtype(self.dtype)
    x = x.astype(compute)
    y = _contract(x, kernel.astype(compute), self.in_axes)
    if self.has_variable(LORA_COLLECTION, "a"):
      a = self.get_variable(LORA_COLLECTION, "a").astype(compute)
      b = self.get_variable(LORA_COLLECTION, "b").astype(compute)
      xl = x
      if self.lora_dropout > 0.0 and not self.deterministic:
        xl = nn.Dropout(self.lora_dropout, deterministic=False)(xl)
      y = y + lora_delta(xl, a, b, float(self.lora_scale), self.in_axes).astype(compute)
    if self.use_bias:
      bias = self.param(
          "bias",
          nn.with_logical_partitioning(nn.initializers.zeros, self.kernel_axes[self.in_axes:]),
          tuple(self.features), jnp_dtype(self.param_dtype))
      y = y + bias.astype(compute)
    return y


class RMSNorm(nn.Module):
  """Root-mean-square norm over the last axis, computed in float32."""
  eps: float
  axis_name: str = "embed"
  dtype: str = "float32"
  param_dtype: str = "float32"

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones,
                                                             (self.axis_name,)),
                       (x.shape[-1],), jnp_dtype(self.param_dtype))
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    # Match the reference: normalise in float32, cast back, then scale in the compute dtype.
    compute = jnp_dtype(self.dtype)
    return scale.astype(compute) * normed.astype(compute)


def rope_inv_freq(head_dim: int, theta: float, scaling: RopeScaling) -> jnp.ndarray:
  """Inverse frequencies of rotary embeddings, with llama3 / linear scaling applied."""
  inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
  if scaling.rope_type == "linear":
    return inv_freq / scaling.factor
  if scaling.rope_type == "llama3":
    old_len = scaling.original_max_position_embeddings
    low_wavelen = old_len / scaling.low_freq_factor
    high_wavelen = old_len / scaling.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = jnp.where(wavelen > low_wavelen, inv_freq / scaling.factor, inv_freq)
    smooth = ((old_len / wavelen - scaling.low_freq_factor)
              / (scaling.high_freq_factor - scaling.low_freq_factor))
    smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return jnp.where(medium, smoothed, scaled)
  return inv_freq


def apply_rope(x, positions, inv_freq):
  """Rotates x [batch, seq, heads, head_dim] by positions [batch, seq] (half-split layout)."""
  freqs = positions.astype(jnp.float32)[..., None] * inv_freq            # [b, t, d/2]
  emb = jnp.concatenate([freqs, freqs], axis=-1)[:, :, None, :]         # [b, t, 1, d]
  cos, sin = jnp.cos(emb), jnp.sin(emb)
  x32 = x.astype(jnp.float32)
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
  return (x32 * cos + rotated * sin).astype(x.dtype)


def projection(cfg: ModelConfig, features: Sequence[int], axes: Tuple[str, ...], name: str, *,
               in_axes: int = 1, use_bias: bool = False, lora_scale: float = 1.0,
               lora_dropout: float = 0.0, deterministic: bool = True) -> Projection:
  return Projection(features=tuple(features), kernel_axes=axes, in_axes=in_axes,
                    use_bias=use_bias, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                    lora_scale=lora_scale, lora_dropout=lora_dropout,
                    deterministic=deterministic, name=name)
