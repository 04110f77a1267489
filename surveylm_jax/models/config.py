"""Model configuration read from a Hugging Face `config.json`.

One frozen dataclass describes every supported decoder family (Qwen2/2.5, Qwen3, Llama 3.x,
Mistral); the differences between families are fields (qkv bias, q/k norm, rope scaling,
sliding window), not subclasses. Both the classic HF layout (`rope_theta` + `rope_scaling`)
and the newer one (`rope_parameters`) are read.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Optional, Tuple

from surveylm_jax import paths

SUPPORTED_MODEL_TYPES = ("qwen2", "qwen3", "llama", "mistral")
SUPPORTED_ROPE_TYPES = ("default", "llama3", "linear")
SUPPORTED_DTYPES = ("float32", "bfloat16", "float16")
ATTENTION_IMPLEMENTATIONS = ("xla", "splash", "cudnn", "auto")


class ModelConfigError(ValueError):
  """A config.json that cannot be represented by the Flax decoder."""


@dataclasses.dataclass(frozen=True)
class RopeScaling:
  rope_type: str = "default"
  factor: float = 1.0
  low_freq_factor: float = 1.0
  high_freq_factor: float = 4.0
  original_max_position_embeddings: int = 8192


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture hyper-parameters plus the numeric policy (param and compute dtypes)."""
  model_type: str
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_hidden_layers: int
  num_attention_heads: int
  num_key_value_heads: int
  head_dim: int
  rms_norm_eps: float = 1e-6
  rope_theta: float = 10000.0
  rope_scaling: RopeScaling = RopeScaling()
  max_position_embeddings: int = 4096
  tie_word_embeddings: bool = False
  attention_bias: bool = False          # qkv bias (qwen2)
  qk_norm: bool = False                 # RMSNorm on q and k per head (qwen3)
  # Per-layer sliding window (None = full attention). A tuple so the config stays hashable.
  sliding_windows: Tuple[Optional[int], ...] = ()
  bos_token_id: Optional[int] = None
  eos_token_ids: Tuple[int, ...] = ()
  pad_token_id: Optional[int] = None
  hidden_act: str = "silu"
  # Numeric policy: params stored in `param_dtype`, matmuls in `dtype`; norms, softmax and
  # logits accumulate in float32 regardless.
  param_dtype: str = "float32"
  dtype: str = "float32"
  remat_policy: str = "none"            # none | full | dots_saveable | nothing_saveable
  # Attention implementation (models.attention): xla | splash | cudnn | auto (the best one the
  # backend and the pass allow; unsupported cases fall back to xla with a logged reason).
  attention: str = "xla"
  # The device kind attention is compiled for ("tpu", "gpu", "cpu"; "" = the default backend).
  # Set by ahead-of-time compilation for other devices; part of the config, so a program traced
  # for one kind is never reused for another.
  attention_platform: str = ""

  def __post_init__(self):
    if self.param_dtype not in SUPPORTED_DTYPES or self.dtype not in SUPPORTED_DTYPES:
      raise ModelConfigError(
          f"unsupported dtype (param_dtype={self.param_dtype!r}, dtype={self.dtype!r}); "
          f"supported: {', '.join(SUPPORTED_DTYPES)}")
    if self.num_attention_heads % self.num_key_value_heads:
      raise ModelConfigError(
          f"num_attention_heads={self.num_attention_heads} is not a multiple of "
          f"num_key_value_heads={self.num_key_value_heads}")
    if self.attention not in ATTENTION_IMPLEMENTATIONS:
      raise ModelConfigError(f"unknown attention {self.attention!r}; valid: "
                             f"{', '.join(ATTENTION_IMPLEMENTATIONS)}")
    if self.sliding_windows and len(self.sliding_windows) != self.num_hidden_layers:
      raise ModelConfigError("sliding_windows must have one entry per layer")

  def replace(self, **kwargs) -> "ModelConfig":
    return dataclasses.replace(self, **kwargs)

  @property
  def uses_sliding_window(self) -> bool:
    return any(w is not None for w in self.sliding_windows)

  def to_hf_dict(self) -> dict:
    """The HF config.json for this architecture (written next to exported weights)."""
    architectures = {"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM",
                     "llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM"}
    rope = {"rope_type": self.rope_scaling.rope_type, "rope_theta": self.rope_theta}
    if self.rope_scaling.rope_type == "llama3":
      rope.update(factor=self.rope_scaling.factor,
                  low_freq_factor=self.rope_scaling.low_freq_factor,
                  high_freq_factor=self.rope_scaling.high_freq_factor,
                  original_max_position_embeddings=self.rope_scaling.original_max_position_embeddings)
    elif self.rope_scaling.rope_type == "linear":
      rope.update(factor=self.rope_scaling.factor)
    d = {
        "architectures": [architectures[self.model_type]],
        "model_type": self.model_type,
        "vocab_size": self.vocab_size,
        "hidden_size": self.hidden_size,
        "intermediate_size": self.intermediate_size,
        "num_hidden_layers": self.num_hidden_layers,
        "num_attention_heads": self.num_attention_heads,
        "num_key_value_heads": self.num_key_value_heads,
        "head_dim": self.head_dim,
        "rms_norm_eps": self.rms_norm_eps,
        "rope_theta": self.rope_theta,
        "rope_parameters": rope,
        "rope_scaling": None if self.rope_scaling.rope_type == "default" else dict(rope),
        "max_position_embeddings": self.max_position_embeddings,
        "tie_word_embeddings": self.tie_word_embeddings,
        "hidden_act": self.hidden_act,
        "bos_token_id": self.bos_token_id,
        "eos_token_id": (list(self.eos_token_ids) if len(self.eos_token_ids) > 1
                         else (self.eos_token_ids[0] if self.eos_token_ids else None)),
        "pad_token_id": self.pad_token_id,
        "torch_dtype": self.param_dtype,
        "dtype": self.param_dtype,
    }
    if self.model_type in ("llama",):
      d["attention_bias"] = self.attention_bias
      d["mlp_bias"] = False
    if self.model_type == "qwen3":
      d["attention_bias"] = self.attention_bias
    windows = [w for w in self.sliding_windows if w is not None]
    if self.model_type == "mistral":
      d["sliding_window"] = windows[0] if windows else None
    elif self.model_type in ("qwen2", "qwen3"):
      d["use_sliding_window"] = bool(windows)
      d["sliding_window"] = windows[0] if windows else None
      if windows:
        d["layer_types"] = ["sliding_attention" if w is not None else "full_attention"
                            for w in self.sliding_windows]
      d["max_window_layers"] = self.num_hidden_layers
    return d


def _rope_from_hf(hf: dict, where: str) -> Tuple[float, RopeScaling]:
  params = hf.get("rope_parameters")
  scaling = hf.get("rope_scaling")
  theta = hf.get("rope_theta")
  if isinstance(params, dict):
    theta = params.get("rope_theta", theta)
    if params.get("rope_type", params.get("type", "default")) != "default":
      scaling = params
  if theta is None:
    theta = 10000.0
  if not scaling:
    return float(theta), RopeScaling()
  rope_type = scaling.get("rope_type", scaling.get("type"))
  if rope_type not in SUPPORTED_ROPE_TYPES:
    raise ModelConfigError(
        f"{where}: unsupported rope scaling type {rope_type!r}; supported: "
        f"{', '.join(SUPPORTED_ROPE_TYPES)}")
  if rope_type == "default":
    return float(theta), RopeScaling()
  return float(theta), RopeScaling(
      rope_type=rope_type,
      factor=float(scaling.get("factor", 1.0)),
      low_freq_factor=float(scaling.get("low_freq_factor", 1.0)),
      high_freq_factor=float(scaling.get("high_freq_factor", 4.0)),
      original_max_position_embeddings=int(scaling.get("original_max_position_embeddings", 8192)))


def _sliding_windows(hf: dict, model_type: str, num_layers: int):
  window = hf.get("sliding_window")
  if model_type == "mistral":
    return tuple([int(window)] * num_layers) if window else ()
  if model_type in ("qwen2", "qwen3") and hf.get("use_sliding_window") and window:
    layer_types = hf.get("layer_types")
    if layer_types is None:
      max_window_layers = hf.get("max_window_layers", num_layers)
      layer_types = ["sliding_attention" if i >= max_window_layers else "full_attention"
                     for i in range(num_layers)]
    windows = tuple(int(window) if t == "sliding_attention" else None for t in layer_types)
    return windows if any(w is not None for w in windows) else ()
  return ()


def config_from_hf_dict(hf: dict, *, param_dtype: str = "float32", dtype: Optional[str] = None,
                        where: str = "config.json", **overrides: Any) -> ModelConfig:
  """Builds a ModelConfig from the parsed contents of an HF config.json."""
  model_type = hf.get("model_type")
  if model_type not in SUPPORTED_MODEL_TYPES:
    raise ModelConfigError(
        f"{where}: unsupported model_type {model_type!r}; supported: "
        f"{', '.join(SUPPORTED_MODEL_TYPES)}")
  for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
              "num_attention_heads"):
    if key not in hf:
      raise ModelConfigError(f"{where}: missing field {key!r}")
  act = hf.get("hidden_act", "silu")
  if act != "silu":
    raise ModelConfigError(f"{where}: unsupported hidden_act {act!r}; supported: silu")
  heads = int(hf["num_attention_heads"])
  head_dim = hf.get("head_dim") or hf["hidden_size"] // heads
  theta, scaling = _rope_from_hf(hf, where)
  eos = hf.get("eos_token_id")
  eos_ids = tuple(eos) if isinstance(eos, (list, tuple)) else ((eos,) if eos is not None else ())
  layers = int(hf["num_hidden_layers"])
  if model_type == "qwen2":
    bias = True     # Qwen2 always carries q/k/v biases.
  else:
    bias = bool(hf.get("attention_bias", False))
  if hf.get("mlp_bias"):
    raise ModelConfigError(f"{where}: mlp_bias=true is not supported")
  return ModelConfig(
      model_type=model_type,
      vocab_size=int(hf["vocab_size"]),
      hidden_size=int(hf["hidden_size"]),
      intermediate_size=int(hf["intermediate_size"]),
      num_hidden_layers=layers,
      num_attention_heads=heads,
      num_key_value_heads=int(hf.get("num_key_value_heads") or heads),
      head_dim=int(head_dim),
      rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
      rope_theta=theta,
      rope_scaling=scaling,
      max_position_embeddings=int(hf.get("max_position_embeddings", 4096)),
      tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
      attention_bias=bias,
      qk_norm=model_type == "qwen3",
      sliding_windows=_sliding_windows(hf, model_type, layers),
      bos_token_id=hf.get("bos_token_id"),
      eos_token_ids=tuple(int(e) for e in eos_ids),
      pad_token_id=hf.get("pad_token_id"),
      hidden_act=act,
      param_dtype=param_dtype,
      dtype=dtype or param_dtype,
      **overrides,
  )


def load_config(path: paths.PathLike, **kwargs: Any) -> ModelConfig:
  """Reads `path/config.json` (or `path` itself when it is a file), local or `gs://`."""
  path = paths.as_path(path)
  file = path if path.is_file() else path / "config.json"
  if not file.exists():
    raise ModelConfigError(f"{path}: no config.json found (is this a Hugging Face model folder?)")
  try:
    hf = json.loads(file.read_text())
  except json.JSONDecodeError as e:
    raise ModelConfigError(f"{file}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}")
  return config_from_hf_dict(hf, where=os.fspath(file), **kwargs)
