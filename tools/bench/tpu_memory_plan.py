"""Memory plan for real TPU slices, made on a CPU: the train step and the evaluation programs
(option scoring; greedy generation = prefill + decode loop with its KV cache) for 7B/8B shapes
are compiled ahead of time (abstract shapes, no weights) for v5e-8, v5p-8 and v6e-8 meshes, and
per-chip memory and compiled FLOPs are read from the executables. Evaluation shards the params
and spreads the rows exactly as `eval.runner` does on the same mesh.

Plans: the two target models at `--rows_per_chip` rows of `--seq_len` tokens, and the SurveyLM
recipe (configs/surveylm_qwen25_7b.py; both stages share its batch) exactly as configured.

JAX_PLATFORMS=cpu python -m tools.bench.tpu_memory_plan --out runs/bench/tpu_memory_plan.json
JAX_PLATFORMS=cpu python -m tools.bench.tpu_memory_plan --plans=surveylm-qwen2.5-7b --slices=v5e-8
JAX_PLATFORMS=cpu python -m tools.bench.tpu_memory_plan --plans=qwen2.5-7b,llama-3.1-8b \
    --slices=v5e-8,v6e-8 --programs=train --attention=xla,splash --seq_lens=2048,8192
(needs requirements-tpu.txt: the libtpu wheel jax's `jax[tpu]` extra pins)
"""
import itertools
import json
import time

import ml_collections
from absl import app, flags, logging

from configs import base, surveylm_qwen25_7b
from surveylm_jax import models, paths
from surveylm_jax.inference import aot as eval_aot
from surveylm_jax.train import aot

_OUT = flags.DEFINE_string("out", "runs/bench/tpu_memory_plan.json", "JSON output.")
_SEQ = flags.DEFINE_integer("seq_len", 2048, "Sequence length.")
_ROWS_PER_CHIP = flags.DEFINE_integer("rows_per_chip", 1, "Batch rows per chip.")
_PLANS = flags.DEFINE_list("plans", ["qwen2.5-7b", "llama-3.1-8b", "surveylm-qwen2.5-7b"],
                           "Models, and the SurveyLM recipe, to plan.")
_SLICES = flags.DEFINE_list("slices", ["v5e-8", "v5p-8", "v6e-8"], "TPU slices to plan for.")
_PROGRAMS = flags.DEFINE_list("programs", ["train", "score", "generate"],
                              "train step, option scoring, generation.")
_EVAL_ROWS_PER_CHIP = flags.DEFINE_integer("eval_rows_per_chip", 2, "Evaluation rows per chip.")
_NEW_TOKENS = flags.DEFINE_integer("new_tokens", 512, "Generated tokens (task 3's default limit).")
_ATTENTION = flags.DEFINE_list("attention", ["xla"],
                               "config.model.attention values to plan (xla, splash, ...).")
_SEQ_LENS = flags.DEFINE_list("seq_lens", [], "Several sequence lengths (overrides --seq_len).")

# Published HF config.json values of the two target models.
MODELS = {
    "qwen2.5-7b": dict(model_type="qwen2", vocab_size=152064, hidden_size=3584,
                       intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                       num_key_value_heads=4, rope_theta=1e6, rms_norm_eps=1e-6,
                       tie_word_embeddings=False),
    "llama-3.1-8b": dict(model_type="llama", vocab_size=128256, hidden_size=4096,
                         intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, rope_theta=500000.0, rms_norm_eps=1e-5,
                         tie_word_embeddings=False,
                         rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                           high_freq_factor=4.0,
                                           original_max_position_embeddings=8192)),
}
# Slice name -> topology string and HBM per chip (GiB, from Cloud TPU docs).
SLICES = {"v5e-8": ("v5e:2x4", 16), "v5p-8": ("v5p:2x2x1", 95), "v6e-8": ("v6e:2x4", 32)}


def plan_config(model: dict) -> ml_collections.ConfigDict:
  c = base.get_config()
  c.model.random_init = ml_collections.ConfigDict(model)
  c.model.dtype = c.model.compute_dtype = "bfloat16"
  c.model.remat_policy = "full"   # keep only layer inputs
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, -1, 1
  return c


RECIPE = "surveylm-qwen2.5-7b"


def recipe_config() -> ml_collections.ConfigDict:
  """The recipe's Stage I config (batch, microbatches, remat, mesh as set) at Qwen2.5-7B shapes."""
  c = surveylm_qwen25_7b.get_config("stage1")
  c.model.random_init = ml_collections.ConfigDict(MODELS["qwen2.5-7b"])
  return c


def plan(name: str, chips: int, seq_len: int):
  """(config, HF model dict, global batch rows, sequence length) of a plan on `chips` chips."""
  if name == RECIPE:
    c = recipe_config()
    return c, MODELS["qwen2.5-7b"], c.data.batch_size, c.data.seq_len
  if name not in MODELS:
    raise ValueError(f"unknown plan {name!r}; valid: {', '.join([*MODELS, RECIPE])}")
  return plan_config(MODELS[name]), MODELS[name], _ROWS_PER_CHIP.value * chips, seq_len


def compile_program(program: str, config, devices, model: dict, batch_rows: int, seq_len: int):
  """(compiled executable, rows, FLOPs per call) of one program on `devices`."""
  cfg = models.config_from_hf_dict(model, param_dtype="bfloat16")
  if program == "train":
    compiled = aot.compile_train_step(config, devices, batch_rows=batch_rows, seq_len=seq_len)
    return compiled, batch_rows, models.flops.train_step_flops(cfg, batch_rows * seq_len, seq_len, lora=True)
  rows = _EVAL_ROWS_PER_CHIP.value * len(devices)
  if program == "score":
    return eval_aot.compile_scoring(config, devices, rows=rows, seq_len=seq_len), rows, None
  if program == "generate":
    return (eval_aot.compile_generation(config, devices, rows=rows, prompt_len=seq_len,
                                        new_tokens=_NEW_TOKENS.value), rows, None)
  raise ValueError(f"unknown program {program!r}; valid: train, score, generate")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  rows = []
  for model_name in _PLANS.value:
    for slice_name in _SLICES.value:
      topology, hbm_gib = SLICES[slice_name]
      devices = aot.topology_devices(topology)
      for seq, attention, program in itertools.product(
          [int(n) for n in _SEQ_LENS.value] or [_SEQ.value], _ATTENTION.value, _PROGRAMS.value):
        config, model, batch_rows, seq_len = plan(model_name, len(devices), seq)
        config.model.attention = attention
        start = time.time()
        n_rows = batch_rows
        try:
          compiled, n_rows, flops = compile_program(program, config, devices, model, batch_rows, seq_len)
          s = aot.summarize(compiled)
          if flops is not None:
            s["flops"] = flops
          s.update(fits=s["peak_bytes_estimate"] <= hbm_gib * 2 ** 30)
        except Exception as e:  # noqa: BLE001 - a slice that cannot hold the program is a result too
          s = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
        s.update(model=model_name, slice=slice_name, program=program, chips=len(devices),
                 attention=attention,
                 hbm_gib=hbm_gib, seq_len=seq_len, batch_rows=n_rows,
                 new_tokens=_NEW_TOKENS.value if program == "generate" else None,
                 microbatches=config.train.microbatches if program == "train" else None,
                 compile_seconds=round(time.time() - start, 1))
        rows.append(s)
        peak = s.get("peak_bytes_estimate")
        print(f"{model_name:19s} {slice_name:6s} {program:8s} {attention:6s} seq={seq_len} "
              f"chips={len(devices)} rows={n_rows} "
              + (f"peak/chip={peak / 2**30:6.2f} GiB of {hbm_gib} GiB" if peak else s.get("error", "")),
              flush=True)
  out = paths.as_path(_OUT.value)
  paths.makedirs(out.parent)
  paths.write_text(out, json.dumps(rows, indent=2))


if __name__ == "__main__":
  app.run(main)
