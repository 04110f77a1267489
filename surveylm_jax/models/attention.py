"""Attention implementations behind `ModelConfig.attention`: one object per implementation, chosen
once per pass, called by every layer.

- `xla`: plain XLA. Scores [b, kv, t, group, s] in float32 for whole rows; any mask.
- `splash`: the Pallas TPU splash-attention kernel (`jax.experimental.pallas.ops.tpu`), forward
  and gradient, never materialising a row of scores. Off TPU it runs in Pallas interpret mode
  (exact, slow: for tests). Causal masking, packed segments, the shared-prefix segments of
  `data.prefix_packing` and a key/value context are each one kernel call over its own keys; their
  outputs are combined by log-sum-exp (`_combined_attention`).
- `cudnn`: `jax.nn.dot_product_attention(implementation="cudnn")` on GPU, with the pass's key
  visibility as its mask.
- `auto`: splash on TPU, cudnn on GPU, xla elsewhere.

A pass a fused kernel cannot run (a decode step, queries at a few positions, a sequence length
the kernel's blocks do not divide, a per-layer window, ...) runs on `xla`, and the reason is
logged once. `select` makes that decision from static shapes only, so it is the same on every
host and every retrace.

The compile target is the default backend, or `ModelConfig.attention_platform` when a program is
lowered ahead of time for other devices (`train.aot`, `inference.aot` compile TPU programs on a
CPU host).
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

# Large negative (not -inf) so a query row with no visible key (a left-pad position) gives a
# finite uniform softmax instead of NaN.
MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)
# Sequence lengths the splash kernel's blocks tile (largest first).
_SPLASH_BLOCKS = (512, 256, 128)

_LOGGED = set()


def _log_once(message: str) -> None:
  if message not in _LOGGED:
    _LOGGED.add(message)
    logging.warning("%s", message)


class Visibility(NamedTuple):
  """Which keys each query of a pass may read (the xla and cudnn kernels' mask).

  visible: [B, Tq, S] causality, padding, packed segments and context slots -- everything but
  the sliding window, which differs per layer and is applied from the positions.
  """
  visible: jax.Array
  q_positions: jax.Array       # [B or 1, Tq]
  k_positions: jax.Array       # [B or 1, S]


class PassInputs(NamedTuple):
  """What a full pass knows about its tokens; each kernel builds its own masks from it."""
  position_ids: jax.Array                  # [B, T]
  attention_mask: jax.Array                # [B, T]
  segment_ids: Optional[jax.Array] = None
  prefix_segment_ids: Optional[jax.Array] = None
  query_index: Optional[jax.Array] = None  # [B, R]: queries at these slots only
  context_positions: Optional[jax.Array] = None   # [B, S] of a KVContext
  context_mask: Optional[jax.Array] = None


def full_pass_visibility(inputs: PassInputs) -> Visibility:
  """The key visibility of a full (non-decode) pass; queries at `query_index` [B, R] if given.

  A query reads keys at or before its row slot, not padding, of its own segment or its prefix
  segment, and every real context slot. The window is measured in positions, so a question
  packed after others is as far from its prefix as in its own prompt."""
  position_ids, attention_mask = inputs.position_ids, inputs.attention_mask
  segment_ids, prefix_segment_ids, query_index = (inputs.segment_ids, inputs.prefix_segment_ids,
                                                  inputs.query_index)
  length = position_ids.shape[1]
  take = ((lambda a: a) if query_index is None
          else (lambda a: jnp.take_along_axis(a, query_index, axis=1)))
  q_slots = jnp.arange(length)[None] if query_index is None else query_index
  k_slots = jnp.arange(length)
  visible = ((k_slots[None, None, :] <= q_slots[:, :, None])
             & attention_mask[:, None, :].astype(bool))
  if segment_ids is not None:
    q_segments = take(segment_ids)
    same = q_segments[:, :, None] == segment_ids[:, None, :]
    if prefix_segment_ids is not None:
      q_prefix = take(prefix_segment_ids)
      same = same | ((q_prefix[:, :, None] == segment_ids[:, None, :])
                     & (q_prefix[:, :, None] != 0))
    visible = visible & same
  k_positions = position_ids
  if inputs.context_mask is not None:
    slots = inputs.context_mask[:, None, :].astype(bool)
    visible = jnp.concatenate(
        [jnp.broadcast_to(slots, (visible.shape[0], visible.shape[1], slots.shape[2])), visible],
        axis=2)
    k_positions = jnp.concatenate([inputs.context_positions, position_ids], axis=1)
  return Visibility(visible, take(position_ids), k_positions)


def _windowed(visibility: Visibility, window) -> jax.Array:
  return visibility.visible & (visibility.q_positions[:, :, None]
                               - visibility.k_positions[:, None, :] < window)


@dataclasses.dataclass(frozen=True)
class XlaAttention:
  """Plain XLA attention over a dense key visibility."""
  name: str = "xla"
  sliding_window: bool = False      # apply the per-layer window from the positions

  def prepare(self, inputs: PassInputs) -> Visibility:
    return full_pass_visibility(inputs)

  def __call__(self, q, k, v, visibility: Visibility, window, context_kv=None):
    """q [B, Tq, H, D]; k, v [B, T, KV, D] (after `context_kv` keys, if any). -> [B, Tq, H, D]."""
    if context_kv is not None:
      k = jnp.concatenate([context_kv[0].astype(k.dtype), k], axis=1)
      v = jnp.concatenate([context_kv[1].astype(v.dtype), v], axis=1)
    visible = _windowed(visibility, window) if self.sliding_window else visibility.visible
    return self._attend(q, k, v, visible)

  def _attend(self, q, k, v, visible):
    return dense_attention(q, k, v, visible)


def dense_attention(q, k, v, visible):
  """Softmax attention of q [B, Tq, H, D] over k, v [B, S, KV, D] where `visible` [B, Tq, S]."""
  batch, length, h, d = q.shape
  kv = k.shape[2]
  # Query heads of one key/value head side by side as rows of one matrix per (batch, kv head):
  # two plain batched matmuls, and scores in the order they produce ([b, kv, t, group, s]),
  # which the softmax and the second product read without transposing the largest array.
  groups = h // kv
  qg = jnp.transpose(q.reshape(batch, length, kv, groups, d), (0, 2, 1, 3, 4))
  qg = qg.reshape(batch, kv, length * groups, d)
  scores = jnp.einsum("bkqd,bskd->bkqs", qg, k, preferred_element_type=jnp.float32)
  scores = scores.reshape(batch, kv, length, groups, -1) * (d ** -0.5)
  scores = jnp.where(visible[:, None, :, None, :], scores, MASK_VALUE)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype).reshape(batch, kv, length * groups, -1)
  out = jnp.einsum("bkqs,bskd->bkqd", probs, v).reshape(batch, kv, length, groups, d)
  return jnp.transpose(out, (0, 2, 1, 3, 4)).reshape(batch, length, h, d)


@dataclasses.dataclass(frozen=True)
class CudnnAttention(XlaAttention):
  """cuDNN's fused attention (GPU) with the pass's visibility (and window) as a boolean mask."""
  name: str = "cudnn"

  def _attend(self, q, k, v, visible):
    return jax.nn.dot_product_attention(q, k.astype(q.dtype), v.astype(q.dtype),
                                        mask=visible[:, None], implementation="cudnn")


class SplashMasks(NamedTuple):
  """Segment ids of the splash kernel calls of one pass (int32; 0 never matches a real token).

  own: a token's segment (+1) where real, 0 at padding: keys of its own segment, causally.
  prefix: queries' prefix segment (+1), -1 where none; prefix_active [B, T] says where.
  context: queries read every real context slot (kv 1 where real, 0 where not)."""
  own: jax.Array
  prefix: Optional[jax.Array]
  prefix_active: Optional[jax.Array]
  context_kv: Optional[jax.Array]
  context_active: Optional[jax.Array]


@dataclasses.dataclass(frozen=True)
class SplashAttention:
  """The Pallas splash-attention kernel; `interpret` runs it in Pallas interpret mode."""
  name: str = "splash"
  window: Optional[int] = None      # one static window for every layer (None = full attention)
  interpret: bool = False

  def prepare(self, inputs: PassInputs) -> SplashMasks:
    mask = jnp.asarray(inputs.attention_mask).astype(bool)
    seg = jnp.asarray(inputs.segment_ids if inputs.segment_ids is not None else mask)
    own = jnp.where(mask, seg.astype(jnp.int32) + 1, 0)
    prefix = prefix_active = context_kv = context_active = None
    if inputs.prefix_segment_ids is not None:
      prefix_ids = jnp.asarray(inputs.prefix_segment_ids)
      prefix_active = mask & (prefix_ids != 0)
      prefix = jnp.where(prefix_active, prefix_ids.astype(jnp.int32) + 1, -1)
    if inputs.context_mask is not None:
      context_mask = jnp.asarray(inputs.context_mask)
      context_kv = context_mask.astype(jnp.int32)
      context_active = jnp.broadcast_to(jnp.any(context_mask != 0, axis=1)[:, None], own.shape)
    return SplashMasks(own, prefix, prefix_active, context_kv, context_active)

  def __call__(self, q, k, v, masks: SplashMasks, window, context_kv=None):
    del window   # static: self.window
    mesh = _context_mesh()
    if mesh is None or mesh.size == 1:
      return self._attend(q, k, v, masks, context_kv)
    # A Pallas kernel is not partitioned by XLA: each device runs it on its own rows and kv
    # heads (shard_map), split as the logical-axis rules split activations and heads.
    batch_axes = _mesh_axes("activation_batch", q.shape[0], mesh)
    head_axes = _mesh_axes("kv_heads", k.shape[2], mesh)
    P = jax.sharding.PartitionSpec
    heads, rows = P(batch_axes, None, head_axes, None), P(batch_axes, None)
    masks_spec = SplashMasks(*(None if m is None else rows for m in masks))
    context_spec = None if context_kv is None else (heads, heads)
    return jax.shard_map(self._attend, mesh=mesh, check_vma=False,
                         in_specs=(heads, heads, heads, masks_spec, context_spec),
                         out_specs=heads)(q, k, v, masks, context_kv)

  def _attend(self, q, k, v, masks: SplashMasks, context_kv=None):
    batch, length, h, d = q.shape
    kv = k.shape[2]
    groups = h // kv
    # [B, KV, G, T, D]: one kernel call per (row, kv head) reads its G query heads (MQA form).
    qg = jnp.transpose(q.reshape(batch, length, kv, groups, d), (0, 2, 3, 1, 4)) * (d ** -0.5)
    heads_first = lambda a: jnp.transpose(a, (0, 2, 1, 3))          # [B, S, KV, D] -> [B, KV, S, D]
    kh, vh = heads_first(k), heads_first(v)
    parts = [_Part(_splash_kernel(groups, length, length, "causal", self.window, self.interpret),
                   kh, vh, masks.own, masks.own, jnp.ones_like(masks.own, bool))]
    if masks.prefix is not None:
      parts.append(_Part(_splash_kernel(groups, length, length, "causal", None, self.interpret),
                         kh, vh, masks.prefix, masks.own, masks.prefix_active))
    if masks.context_kv is not None:
      ck, cv = (heads_first(a.astype(k.dtype)) for a in context_kv)
      parts.append(_Part(_splash_kernel(groups, length, ck.shape[2], "full", None, self.interpret),
                         ck, cv, jnp.ones_like(masks.own), masks.context_kv, masks.context_active))
    kernels = tuple(p.kernel for p in parts)
    per_row = jax.vmap(_combined_attention, in_axes=(None, 0, 0, 0, 0, 0, 0))   # batch rows
    per_head = jax.vmap(per_row, in_axes=(None, 1, 1, 1, None, None, None), out_axes=1)  # kv heads
    out = per_head(kernels, qg, tuple(p.k for p in parts), tuple(p.v for p in parts),
                   tuple(p.q_segments for p in parts), tuple(p.kv_segments for p in parts),
                   tuple(p.active for p in parts))               # [B, KV, G, T, D]
    return jnp.transpose(out, (0, 3, 1, 2, 4)).reshape(batch, length, h, d).astype(q.dtype)


def _context_mesh():
  """The mesh a trace runs under (`with mesh:` as training's rules context sets), or None."""
  from jax._src import mesh as mesh_lib   # pylint: disable=g-import-not-at-top
  mesh = mesh_lib.thread_resources.env.physical_mesh
  return None if mesh.empty else mesh


# Where no rules table is in context (evaluation traces under its placement's mesh only):
# rows over the batch axes as `inference.placement` spreads them, kv heads as the params are.
_DEFAULT_AXES = {"activation_batch": ("data", "fsdp"), "kv_heads": ("tensor",)}


def _mesh_axes(logical: str, size: int, mesh):
  """The mesh axes the rules map `logical` to, or None (replicated) where they do not divide
  `size` (a short evaluation batch is replicated, as `inference.placement` does)."""
  import flax.linen as nn   # pylint: disable=g-import-not-at-top
  rules = nn.get_logical_axis_rules()
  axes = nn.logical_to_mesh_axes((logical,))[0] if rules else _DEFAULT_AXES[logical]
  if axes is None:
    return None
  names = (axes,) if isinstance(axes, str) else tuple(axes)
  names = tuple(a for a in names if a in mesh.axis_names)
  shards = int(np.prod([mesh.shape[a] for a in names])) if names else 1
  return names if names and size % shards == 0 else None


class _Part(NamedTuple):
  kernel: object
  k: jax.Array
  v: jax.Array
  q_segments: jax.Array
  kv_segments: jax.Array
  active: jax.Array


def _block(n: int) -> int:
  return next(b for b in _SPLASH_BLOCKS if n % b == 0)


def _splash_kernel(heads: int, q_len: int, kv_len: int, kind: str, window: Optional[int],
                   interpret: bool):
  """An MQA splash kernel (`heads` query heads over one key/value head) that also returns its
  log-sum-exp. Built inside each trace that uses it (the scanned layers trace it once): its
  mask arrays become that trace's values, so a kernel is never shared between traces."""
  from jax.experimental.pallas.ops.tpu.splash_attention import (
      splash_attention_kernel as sk, splash_attention_mask as sm)
  shape = (q_len, kv_len)
  if kind == "full":
    head_mask = sm.FullMask(shape)
  elif window is not None:
    head_mask = sm.LocalMask(shape, window_size=(window - 1, 0), offset=0)
  else:
    head_mask = sm.CausalMask(shape)
  bq, bkv = _block(q_len), _block(kv_len)
  sizes = sk.BlockSizes(block_q=bq, block_kv=bkv, block_kv_compute=bkv, block_q_dkv=bq,
                        block_kv_dkv=bkv, block_kv_dkv_compute=bkv, block_q_dq=bq,
                        block_kv_dq=bkv)
  return sk.make_splash_mqa_single_device(sm.MultiHeadMask([head_mask] * heads),
                                          block_sizes=sizes, save_residuals=True,
                                          interpret=interpret)


def _collapse(mask_info):
  # What the kernel's own entry point does to dynamic masks' partial blocks before its kernels.
  if mask_info is None or mask_info.partial_mask_blocks is None:
    return mask_info
  blocks = mask_info.partial_mask_blocks
  return mask_info._replace(partial_mask_blocks=blocks.reshape(-1, *blocks.shape[-2:]))


def _combined_forward(kernels, q, ks, vs, q_segs, kv_segs, actives):
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
  outs, lses = [], []
  for kernel, k, v, qs, kvs, active in zip(kernels, ks, vs, q_segs, kv_segs, actives):
    out, (lse,) = kernel(q, k, v, segment_ids=sk.SegmentIds(qs, kvs))
    outs.append(out)
    lses.append(jnp.where(active[None, :], lse, -jnp.inf))
  total = jax.nn.logsumexp(jnp.stack(lses), axis=0)                 # [G, T]; own keys: finite
  out = jnp.zeros(q.shape, jnp.float32)
  for o, lse, active in zip(outs, lses, actives):
    weight = jnp.exp(lse - total)[..., None]
    out = out + jnp.where(active[None, :, None], weight * o.astype(jnp.float32), 0.0)
  return out.astype(q.dtype), total


@jax.custom_vjp
def _combined_attention(kernels, q, ks, vs, q_segs, kv_segs, actives):
  """Attention of q [G, T, D] over the keys of several kernel calls as if they were one softmax.

  Each call returns its output and log-sum-exp; the output is their log-sum-exp-weighted sum. The
  kernel's gradient cannot take a log-sum-exp cotangent, so the backward runs each call's
  gradient kernels with the *combined* output and log-sum-exp as residuals: then each call's
  probabilities are the combined softmax's on its keys and its dq/dk/dv are exactly its share.
  A call with no key for a query (`active` false) gets weight 0 and no cotangent there. The
  kernels (their block-mask arrays) are arguments, not closure: the backward of a scanned layer
  is traced apart from its forward."""
  return _combined_forward(kernels, q, ks, vs, q_segs, kv_segs, actives)[0]


def _combined_fwd(kernels, q, ks, vs, q_segs, kv_segs, actives):
  out, total = _combined_forward(kernels, q, ks, vs, q_segs, kv_segs, actives)
  return out, (kernels, q, ks, vs, q_segs, kv_segs, actives, out, total)


def _combined_bwd(res, do):
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
  kernels, q, ks, vs, q_segs, kv_segs, actives, out, total = res
  dq = jnp.zeros(q.shape, jnp.float32)
  dks, dvs = [], []
  for kernel, k, v, qs, kvs, active in zip(kernels, ks, vs, q_segs, kv_segs, actives):
    kw = kernel.kwargs
    grads = sk._splash_attention_bwd(   # pylint: disable=protected-access
        False, kw["mask_value"], kw["is_mqa"], kw["block_sizes"], None, kw["mask_function"],
        kw["attn_logits_soft_cap"], kw["interpret"],
        (q, k, v, sk.SegmentIds(qs, kvs), None, out, total,
         _collapse(kernel.dq_mask_info), _collapse(kernel.dkv_mask_info)),
        jnp.where(active[None, :, None], do, 0).astype(do.dtype))
    dq = dq + grads[3].astype(jnp.float32)
    dks.append(grads[4].astype(k.dtype))
    dvs.append(grads[5].astype(v.dtype))
  return (None, dq.astype(q.dtype), tuple(dks), tuple(dvs), None, None, None)


_combined_attention.defvjp(_combined_fwd, _combined_bwd)


def _uniform_window(windows: Sequence[Optional[int]], reach: int):
  """(ok, window): one static window for every layer, or None where no window reaches `reach`
  keys back (it then changes nothing); ok False when layers differ within reach."""
  within = {w for w in windows if w is not None and w < reach}
  full = any(w is None or w >= reach for w in windows) if windows else True
  if not within:
    return True, None
  if len(within) == 1 and not full:
    return True, within.pop()
  return False, None


def select(cfg, *, length: int, context_length: int = 0, prefix: bool = False,
           query_index: bool = False, decode: bool = False):
  """The kernel a pass runs: `cfg.attention` where the pass allows it, else xla (reason logged).
  Static shapes only, so every host and every retrace decides the same."""
  platform = cfg.attention_platform or jax.default_backend()
  name = cfg.attention
  if name == "auto":
    name = {"tpu": "splash", "gpu": "cudnn"}.get(platform, "xla")
  xla = XlaAttention(sliding_window=cfg.uses_sliding_window)
  if name == "xla":
    return xla
  reason = None
  if decode:
    reason = "decode steps (one query per row over a KV cache)"
  elif query_index:
    reason = "queries computed at a few positions only"
  if reason is None and name == "cudnn":
    if platform != "gpu":
      reason = f"cudnn needs a GPU (compiling for {platform})"
    elif cfg.dtype not in ("bfloat16", "float16"):
      reason = f"cudnn needs bfloat16/float16 compute (model.compute_dtype={cfg.dtype})"
    elif cfg.head_dim % 8 or cfg.head_dim > 128:
      reason = f"cudnn needs head_dim <= 128 and a multiple of 8 (head_dim={cfg.head_dim})"
    if reason is None:
      return CudnnAttention(sliding_window=cfg.uses_sliding_window)
  if reason is None and name == "splash":
    windows = cfg.sliding_windows or (None,) * cfg.num_hidden_layers
    ok, window = _uniform_window(windows, length + context_length)
    if platform not in ("tpu", "cpu"):
      reason = f"splash is a TPU kernel (compiling for {platform})"
    elif length % 128 or context_length % 128:
      reason = (f"splash needs sequence lengths that are multiples of 128 (queries {length}, "
                f"context {context_length})")
    elif not ok:
      reason = f"splash needs one sliding window for every layer (windows {sorted(set(windows), key=str)})"
    elif window is not None and (prefix or context_length):
      reason = ("a sliding window counts positions; with shared-prefix segments or a context "
                "they are not slot distances")
    if reason is None:
      return SplashAttention(window=window, interpret=platform == "cpu")
  _log_once(f"attention {cfg.attention!r} -> xla for {reason}")
  return xla
