"""Where each Flax param lives in a Hugging Face checkpoint, as data both directions read.

HF stores `nn.Linear` weights as [out, in]; our projections keep [in..., out...] with heads split
out (`q_proj.kernel` is [embed, heads, head_dim]) and every layer stacked on a leading axis.
Every mapping is the same two steps: optionally transpose the 2-D HF tensor, then split each of
its axes into one or more of ours (`groups`). Written as data rather than as a pair of
functions, the mapping also answers the question a sharded load asks: which slice of the HF
tensor holds a given slice of the param (`source_box`).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, List, Tuple

import numpy as np

from surveylm_jax.models.config import ModelConfig

Box = Tuple[Tuple[int, int], ...]   # (start, stop) per axis
Groups = Tuple[Tuple[int, ...], ...]


class CheckpointError(ValueError):
  """Weights that do not fit the architecture their config.json describes."""


@dataclasses.dataclass(frozen=True)
class TensorLayout:
  hf_name: str                                   # with {i} for the layer index
  path: Tuple[str, ...]                          # path inside params["layers"] or params
  # Our axes, grouped by the axis of the (transposed) HF tensor they come from.
  groups: Callable[[ModelConfig], Groups]
  transposed: bool = False                       # HF [out, in] -> ours [in..., out...]
  when: Callable[[ModelConfig], bool] = lambda c: True

  def hf_shape(self, cfg: ModelConfig) -> Tuple[int, ...]:
    shape = tuple(math.prod(g) for g in self.groups(cfg))
    return shape[::-1] if self.transposed else shape

  def our_shape(self, cfg: ModelConfig) -> Tuple[int, ...]:
    return tuple(n for g in self.groups(cfg) for n in g)

  def to_ours(self, w: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    return (w.T if self.transposed else w).reshape(self.our_shape(cfg))

  def to_hf(self, k: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    w = k.reshape(tuple(math.prod(g) for g in self.groups(cfg)))
    return w.T if self.transposed else w

  def source_box(self, cfg: ModelConfig, box: Box) -> Tuple[Box, Tuple[slice, ...]]:
    """The HF slice holding `ours[box]`, and how to cut `ours[box]` out of it.

    Returns (hf_box, keep): read `w = hf[hf_box]`, then `ours[box] ==
    split(transpose(w))[keep]`, where `split` reshapes each HF axis into its group with the
    group's leading axis shortened to the box. Within a group only the leading axis maps to a
    contiguous HF range; the others are read whole and cut afterwards, which costs nothing in
    the usual rules (head_dim is never split) and at most the group's extent otherwise.
    """
    hf_box, keep, axis = [], [], 0
    for group in self.groups(cfg):
      (a, b), rest = box[axis], box[axis + 1:axis + len(group)]
      inner = math.prod(group[1:])
      hf_box.append((a * inner, b * inner))
      keep.append(slice(None))
      keep.extend(slice(lo, hi) for lo, hi in rest)
      axis += len(group)
    return (tuple(hf_box[::-1]) if self.transposed else tuple(hf_box)), tuple(keep)

  def read_box(self, w: np.ndarray, cfg: ModelConfig, box: Box) -> np.ndarray:
    """`ours[box]` from `w`, the HF slice `source_box` named (still in the file's dtype)."""
    _, keep = self.source_box(cfg, box)
    w = w.T if self.transposed else w
    shape, axis = [], 0
    for group in self.groups(cfg):
      a, b = box[axis]
      shape.extend((b - a,) + tuple(group[1:]))
      axis += len(group)
    return w.reshape(shape)[keep]


def _in_out(heads_attr):
  """[heads*head_dim, embed] (HF) <-> [embed, heads, head_dim] (ours)."""
  return dict(groups=lambda c: ((c.hidden_size,), (getattr(c, heads_attr), c.head_dim)),
              transposed=True)


def _bias(heads_attr):
  return dict(groups=lambda c: ((getattr(c, heads_attr), c.head_dim),))


def _transpose(rows, cols):
  """HF [rows, cols] -> ours [cols, rows]."""
  return dict(groups=lambda c: ((cols(c),), (rows(c),)), transposed=True)


def _vector(size):
  return dict(groups=lambda c: ((size(c),),))


_E = lambda c: c.hidden_size          # noqa: E731
_I = lambda c: c.intermediate_size    # noqa: E731
_D = lambda c: c.head_dim             # noqa: E731
_V = lambda c: c.vocab_size           # noqa: E731

LAYER_TENSORS: List[TensorLayout] = [
    TensorLayout("model.layers.{i}.input_layernorm.weight", ("input_layernorm", "scale"),
                 **_vector(_E)),
    TensorLayout("model.layers.{i}.post_attention_layernorm.weight",
                 ("post_attention_layernorm", "scale"), **_vector(_E)),
    TensorLayout("model.layers.{i}.self_attn.q_proj.weight", ("self_attn", "q_proj", "kernel"),
                 **_in_out("num_attention_heads")),
    TensorLayout("model.layers.{i}.self_attn.k_proj.weight", ("self_attn", "k_proj", "kernel"),
                 **_in_out("num_key_value_heads")),
    TensorLayout("model.layers.{i}.self_attn.v_proj.weight", ("self_attn", "v_proj", "kernel"),
                 **_in_out("num_key_value_heads")),
    # HF [embed, heads*head_dim] -> ours [heads, head_dim, embed].
    TensorLayout("model.layers.{i}.self_attn.o_proj.weight", ("self_attn", "o_proj", "kernel"),
                 groups=lambda c: ((c.num_attention_heads, c.head_dim), (c.hidden_size,)),
                 transposed=True),
    TensorLayout("model.layers.{i}.self_attn.q_proj.bias", ("self_attn", "q_proj", "bias"),
                 **_bias("num_attention_heads"), when=lambda c: c.attention_bias),
    TensorLayout("model.layers.{i}.self_attn.k_proj.bias", ("self_attn", "k_proj", "bias"),
                 **_bias("num_key_value_heads"), when=lambda c: c.attention_bias),
    TensorLayout("model.layers.{i}.self_attn.v_proj.bias", ("self_attn", "v_proj", "bias"),
                 **_bias("num_key_value_heads"), when=lambda c: c.attention_bias),
    TensorLayout("model.layers.{i}.self_attn.q_norm.weight", ("self_attn", "q_norm", "scale"),
                 **_vector(_D), when=lambda c: c.qk_norm),
    TensorLayout("model.layers.{i}.self_attn.k_norm.weight", ("self_attn", "k_norm", "scale"),
                 **_vector(_D), when=lambda c: c.qk_norm),
    TensorLayout("model.layers.{i}.mlp.gate_proj.weight", ("mlp", "gate_proj", "kernel"),
                 **_transpose(_I, _E)),
    TensorLayout("model.layers.{i}.mlp.up_proj.weight", ("mlp", "up_proj", "kernel"),
                 **_transpose(_I, _E)),
    TensorLayout("model.layers.{i}.mlp.down_proj.weight", ("mlp", "down_proj", "kernel"),
                 **_transpose(_E, _I)),
]

TOP_TENSORS: List[TensorLayout] = [
    TensorLayout("model.embed_tokens.weight", ("embed_tokens", "embedding"),
                 groups=lambda c: ((c.vocab_size,), (c.hidden_size,))),
    TensorLayout("model.norm.weight", ("norm", "scale"), **_vector(_E)),
    TensorLayout("lm_head.weight", ("lm_head", "kernel"), **_transpose(_V, _E),
                 when=lambda c: not c.tie_word_embeddings),
]


def expected_tensors(cfg: ModelConfig) -> List[Tuple[str, TensorLayout]]:
  """(HF name, layout) of every tensor `cfg` needs, top-level first."""
  out = [(spec.hf_name, spec) for spec in TOP_TENSORS if spec.when(cfg)]
  for spec in LAYER_TENSORS:
    if spec.when(cfg):
      out.extend((spec.hf_name.format(i=i), spec) for i in range(cfg.num_hidden_layers))
  return out


def check_tensors(tensors, cfg: ModelConfig, where: str) -> None:
  """Missing, wrongly shaped or unknown tensors, all named at once before anything is read."""
  available = tensors.names()
  expected = expected_tensors(cfg)
  missing = [n for n, _ in expected if n not in available]
  if missing:
    raise CheckpointError(f"{where}: {len(missing)} tensor(s) missing for {cfg.model_type}: "
                          f"{', '.join(missing[:12])}{' ...' if len(missing) > 12 else ''}")
  bad = [f"{n} has shape {tuple(tensors.shape(n))}, expected {spec.hf_shape(cfg)}"
         for n, spec in expected if tuple(tensors.shape(n)) != spec.hf_shape(cfg)]
  if bad:
    raise CheckpointError(f"{where}: wrongly shaped tensor(s): " + "; ".join(bad[:12]))
  known = {n for n, _ in expected}
  # Tied checkpoints sometimes also store lm_head.weight; rotary caches are derived buffers.
  ignorable = {"lm_head.weight"} if cfg.tie_word_embeddings else set()
  extra = sorted(n for n in available - known - ignorable if "rotary_emb.inv_freq" not in n)
  if extra:
    raise CheckpointError(f"{where}: unexpected tensor(s) this architecture does not use: "
                          f"{', '.join(extra[:12])}")
